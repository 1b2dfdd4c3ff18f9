// Runs test/vscode/suite.js inside desktop VS Code downloaded by @vscode/test-electron, on the
// same workspace as test/vscode/run.js. For people with network access; CI here has none and
// runs the suite in the VS Code server instead (test/vscode/run.js).
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { runTests } = require('@vscode/test-electron');
const { makeWorkspace } = require('../vscode/run.js');

const root = path.resolve(__dirname, '..', '..');
const workspace = fs.mkdtempSync(path.join(os.tmpdir(), 'neural-lineage-electron-'));
makeWorkspace(workspace);
runTests({
  extensionDevelopmentPath: root,
  extensionTestsPath: path.join(root, 'test', 'vscode', 'suite.js'),
  launchArgs: [workspace, '--disable-extensions'],
})
  .catch((error) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(() => fs.rmSync(workspace, { recursive: true, force: true }));
