// Runs test/electron/suite.js inside desktop VS Code downloaded by @vscode/test-electron.
// For people with network access; CI here has none, so it runs the same suite in the VS Code
// server instead (see README).
const path = require('node:path');
const { runTests } = require('@vscode/test-electron');

const root = path.resolve(__dirname, '..', '..');
runTests({
  extensionDevelopmentPath: root,
  extensionTestsPath: path.join(__dirname, 'suite.js'),
  launchArgs: [path.join(root, 'test', 'fixtures'), '--disable-extensions'],
}).catch((error) => {
  console.error(error);
  process.exit(1);
});
