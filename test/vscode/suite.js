// The extension's tests in real VS Code. VS Code's extension host requires this module and calls
// run() (the contract of @vscode/test-electron's runners); test/vscode/run.js starts VS Code on
// a copy of a fixture workspace (the demo zoo of test/fixtures/demo plus train.py, config.yaml,
// analysis.ipynb and a truncated checkpoint, see WORKSPACE in run.js) and reports the result.
//
// Adding a test: call test('what it checks', async () => { ... }) below. Tests run one after the
// other in the order written, each with a time limit; a failing test does not stop the others.
// Helpers: waitFor, hoverText, checkpointHover, openAt, positionOf, expectedReport, assertReport,
// reportDocument, screenshot, settle.
// NL_VSCODE_GREP (a regular expression) runs only the tests whose names match.
'use strict';

const assert = require('node:assert/strict');
const childProcess = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const vscode = require('vscode');

const EXTENSION_ID = 'neural-lineage.neural-lineage';
const ROOT = path.resolve(__dirname, '..', '..');
const TRUTH = JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', 'demo', 'truth.json'), 'utf8'));

/** The extension as VS Code loaded it (the working tree, or the .vsix with run.js --vsix). */
function extension() {
  const found = vscode.extensions.getExtension(EXTENSION_ID);
  assert.ok(found, `${EXTENSION_ID} is not loaded`);
  return found;
}

// ---------------------------------------------------------------------------------------------
// Runner

const tests = [];

/** Registers a test. options.timeoutMs bounds it (default 90 s). */
function test(name, fn, options = {}) {
  tests.push({ name, fn, timeoutMs: options.timeoutMs ?? 90_000 });
}

function log(line) {
  // Under test/vscode/run.js the lines go to a file (NL_VSCODE_LOG) that the runner prints as it
  // grows; the extension host's console reaches it only indirectly, through the window's.
  if (process.env.NL_VSCODE_LOG) fs.appendFileSync(process.env.NL_VSCODE_LOG, `${line}\n`);
  else console.log(line);
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result in ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

exports.run = async function run() {
  const grep = process.env.NL_VSCODE_GREP ? new RegExp(process.env.NL_VSCODE_GREP) : undefined;
  const selected = tests.filter((t) => !grep || grep.test(t.name));
  log(`suite: VS Code ${vscode.version}, extension host Node ${process.version}, ${selected.length} tests`);
  // Screenshots show the editor area only: no chat or other side panel.
  await vscode.commands.executeCommand('workbench.action.closeAuxiliaryBar').then(undefined, () => undefined);
  const results = [];
  for (const t of selected) {
    const started = Date.now();
    try {
      await withTimeout(Promise.resolve().then(t.fn), t.timeoutMs, t.name);
      results.push({ name: t.name, ok: true, ms: Date.now() - started });
      log(`  ✓ ${t.name} (${Date.now() - started} ms)`);
    } catch (error) {
      results.push({ name: t.name, ok: false, ms: Date.now() - started, error: String(error && error.stack || error) });
      log(`  ✗ ${t.name} (${Date.now() - started} ms)`);
      for (const line of String(error && error.stack || error).split('\n')) log(`      ${line}`);
    }
    // Each test starts from an empty editor area, whatever the one before left open.
    await closeEditors().catch(() => undefined);
  }
  const failed = results.filter((r) => !r.ok).length;
  log(`suite: ${results.length - failed} passed, ${failed} failed`);
  if (process.env.NL_VSCODE_RESULTS) fs.writeFileSync(process.env.NL_VSCODE_RESULTS, JSON.stringify(results, null, 2));
  if (failed > 0) throw new Error(`${failed} of ${results.length} tests failed`);
};

// ---------------------------------------------------------------------------------------------
// Helpers

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Calls probe until it returns a truthy value; throws with the last value or error after timeoutMs. */
async function waitFor(what, probe, { timeoutMs = 60_000, intervalMs = 250 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}; last: ${last instanceof Error ? last.stack : JSON.stringify(last)}`);
    await sleep(intervalMs);
  }
}

/** Lets queued UI work (hover rendering, editor layout) finish. */
const settle = (ms = 500) => sleep(ms);

function workspaceUri(...segments) {
  return vscode.Uri.joinPath(vscode.workspace.workspaceFolders[0].uri, ...segments);
}

/** The position of the middle of the first occurrence of text in a document. */
function positionOf(document, text) {
  const offset = document.getText().indexOf(text);
  assert.ok(offset >= 0, `"${text}" is not in ${document.uri.toString()}`);
  return document.positionAt(offset + Math.floor(text.length / 2));
}

/** Opens a workspace file in an editor and puts the cursor in the middle of text. */
async function openAt(relative, text) {
  const document = await vscode.workspace.openTextDocument(workspaceUri(...relative.split('/')));
  const editor = await vscode.window.showTextDocument(document, { preview: false });
  const position = positionOf(document, text);
  editor.selection = new vscode.Selection(position, position);
  editor.revealRange(new vscode.Range(position, position), vscode.TextEditorRevealType.InCenter);
  return { document, editor, position };
}

/** All hover Markdown at a position, joined; '' when no provider answers. */
async function hoverText(uri, position) {
  const hovers = (await vscode.commands.executeCommand('vscode.executeHoverProvider', uri, position)) ?? [];
  return hovers
    .flatMap((hover) => hover.contents.map((part) => (typeof part === 'string' ? part : part.value ?? '')))
    .join('\n');
}

/** Hovers until the language server answers with a checkpoint report (it starts with the window). */
async function checkpointHover(uri, position, until = (text) => /parameters/.test(text)) {
  let text = '';
  await waitFor(`a checkpoint hover at ${uri.toString()}:${position.line + 1}:${position.character + 1}`, async () => {
    text = await hoverText(uri, position);
    return until(text) ? text : undefined;
  }, { timeoutMs: 60_000, intervalMs: 500 });
  return text;
}

/** What the extension should report for a demo checkpoint, from test/fixtures/demo/truth.json. */
function expectedReport(modelPath) {
  const model = TRUTH.models.find((m) => m.path === modelPath);
  assert.ok(model, `${modelPath} is not in truth.json`);
  const architecture = TRUTH.architectures[model.architecture];
  const classes = model.task.num_classes;
  const shapes = Object.entries(architecture.tensor_shapes_10_classes).map(([name, shape]) =>
    architecture.head_tensors.includes(name) ? [classes, ...shape.slice(1)] : shape);
  const parameters = shapes.reduce((sum, shape) => sum + shape.reduce((a, b) => a * b, 1), 0);
  const format = { 'torch-zip': 'pytorch-zip', 'torch-legacy': 'pytorch-pickle', safetensors: 'safetensors' }[model.container];
  assert.ok(format, `no expected format for container ${model.container}`);
  const tensors = Object.keys(architecture.tensor_shapes_10_classes).map((name) => model.key_prefix + name);
  return { model, parameters, format, tensors };
}

function assertReport(markdown, modelPath) {
  const expected = expectedReport(modelPath);
  const basename = path.basename(modelPath).replace(/_/g, '\\_');
  assert.ok(markdown.includes(basename), `report does not name ${basename}:\n${markdown}`);
  assert.match(markdown, new RegExp(`— ${expected.format}\\b`), `format ${expected.format} missing:\n${markdown}`);
  assert.ok(
    markdown.includes(`${expected.parameters.toLocaleString('en-US')} parameters`),
    `parameter count ${expected.parameters.toLocaleString('en-US')} missing:\n${markdown}`,
  );
  assert.match(markdown, new RegExp(`in ${expected.tensors.length} tensors`));
  return expected;
}

/**
 * Asks the runner (test/vscode/run.js) for a screenshot of the window and waits until it is
 * taken. selector: a CSS selector that must be visible first; text: a text that must appear in
 * the page or one of its frames (webviews) first. Without a runner (NL_VSCODE_SCREENSHOTS
 * unset) it does nothing.
 */
async function screenshot(name, { selector, text, timeoutMs = 30_000 } = {}) {
  const dir = process.env.NL_VSCODE_SCREENSHOTS;
  if (!dir) return undefined;
  assert.match(name, /^[\w.-]+$/);
  const request = path.join(dir, `${Date.now()}-${name}.json`);
  fs.writeFileSync(`${request}.tmp`, JSON.stringify({ name, selector, text, timeoutMs }));
  fs.renameSync(`${request}.tmp`, request);
  const done = await waitFor(`screenshot ${name}`, () => fs.existsSync(`${request}.done`) && fs.readFileSync(`${request}.done`, 'utf8'), {
    timeoutMs: timeoutMs + 15_000,
    intervalMs: 100,
  });
  const answer = JSON.parse(done);
  if (!answer.ok) throw new Error(`screenshot ${name}: ${answer.error}`);
  log(`    screenshot ${answer.file}`);
  return answer.file;
}

/** The read-only report document the extension opened for a checkpoint (its URI names the checkpoint's). */
function reportDocument(checkpoint) {
  return waitFor(`the report document of ${checkpoint.toString()}`, () =>
    vscode.workspace.textDocuments.find((d) =>
      !['file', 'untitled', 'vscode-notebook-cell'].includes(d.uri.scheme) && d.uri.query.includes(checkpoint.toString()) && d.getText().length > 0));
}

async function closeEditors() {
  await vscode.commands.executeCommand('workbench.action.closeAllEditors');
}

/** Error diagnostics of the documents whose URIs pass `which`. */
function errorDiagnostics(which = () => true) {
  return vscode.languages
    .getDiagnostics()
    .filter(([uri]) => which(uri))
    .flatMap(([uri, diagnostics]) => diagnostics.map((d) => ({ uri: uri.toString(), d })))
    .filter(({ d }) => d.severity === vscode.DiagnosticSeverity.Error);
}

// ---------------------------------------------------------------------------------------------
// Tests of what the extension does (client/src/extension.ts, server/src/server.ts)

test('activates by itself on a workspace with checkpoints (workspaceContains)', async () => {
  // Not activated by the test: the workspaceContains activation event must do it.
  await waitFor('the extension to activate', () => extension().isActive, { timeoutMs: 60_000 });
  const events = extension().packageJSON.activationEvents ?? [];
  assert.ok(!events.some((event) => event === '*' || event === 'onStartupFinished'), `activation must be lazy: ${events}`);
});

test('registers every neuralLineage.* command it contributes', async () => {
  const contributed = extension().packageJSON.contributes.commands.map((c) => c.command);
  assert.ok(contributed.includes('neuralLineage.inspectCheckpoint'));
  const registered = new Set(await vscode.commands.getCommands(true));
  const missing = contributed.filter((command) => !registered.has(command));
  assert.deepEqual(missing, [], `contributed but not registered: ${missing.join(', ')}`);
});

test('hover on a checkpoint path in train.py shows its format and parameter count', async () => {
  const written = 'models/b7t8d/model_best.pth';
  const { document, position } = await openAt('train.py', written);
  const text = await checkpointHover(document.uri, position);
  assertReport(text, 'b7t8d/model_best.pth');
  // The hover covers the path as written, inside the quotes.
  const hovers = await vscode.commands.executeCommand('vscode.executeHoverProvider', document.uri, position);
  const ours = hovers.find((h) => h.contents.some((part) => (part.value ?? String(part)).includes('parameters')));
  assert.ok(ours.range, 'the hover has no range');
  assert.equal(document.getText(ours.range), written);

  await vscode.commands.executeCommand('workbench.action.focusActiveEditorGroup');
  await vscode.commands.executeCommand('editor.action.showHover');
  await screenshot('hover-train-py', { text: '25,733 parameters' });
});

test('hover reads every container the demo zoo uses (zip, legacy pickle, safetensors)', async () => {
  const document = await vscode.workspace.openTextDocument(workspaceUri('train.py'));
  for (const [written, modelPath] of [
    ['models/8j4/weights.pth', '8j4/weights.pth'],
    ['models/isvy/gtxa/weights.safetensors', 'isvy/gtxa/weights.safetensors'],
    ['models/efrqsk/checkpoints/model.ckpt', 'efrqsk/checkpoints/model.ckpt'],
  ]) {
    assertReport(await checkpointHover(document.uri, positionOf(document, written)), modelPath);
  }
});

test('hover works in YAML and in notebook cells', async () => {
  const yaml = await vscode.workspace.openTextDocument(workspaceUri('config.yaml'));
  assertReport(await checkpointHover(yaml.uri, positionOf(yaml, 'models/pxhe/checkpoints/model.ckpt')), 'pxhe/checkpoints/model.ckpt');

  const notebook = await vscode.workspace.openNotebookDocument(workspaceUri('analysis.ipynb'));
  const cell = notebook.getCells().find((c) => c.document.getText().includes('models/zdyd8z/model.pt'));
  assert.ok(cell, 'no notebook cell names models/zdyd8z/model.pt');
  assertReport(await checkpointHover(cell.document.uri, positionOf(cell.document, 'models/zdyd8z/model.pt')), 'zdyd8z/model.pt');
});

test('no hover for paths that are not there or are not checkpoints', async () => {
  const document = await vscode.workspace.openTextDocument(workspaceUri('train.py'));
  // Make sure the server is answering before checking for silence.
  await checkpointHover(document.uri, positionOf(document, 'models/b7t8d/model_best.pth'));
  for (const text of ['models/missing/nothing.pt', 'data/fashion_mnist.csv', 'import torch']) {
    const hover = await hoverText(document.uri, positionOf(document, text));
    assert.doesNotMatch(hover, /parameters|Unreadable/, `unexpected hover on ${text}: ${hover}`);
  }
});

test('a truncated checkpoint hovers as unreadable, not as an error', async () => {
  const document = await vscode.workspace.openTextDocument(workspaceUri('train.py'));
  const text = await checkpointHover(document.uri, positionOf(document, 'broken/truncated.pt'), (t) => /Unreadable|parameters/.test(t));
  assert.match(text, /Unreadable/);
});

test('neuralLineage.inspectCheckpoint opens a full report of a checkpoint', async () => {
  await closeEditors();
  const checkpoint = workspaceUri('models', 'b7t8d', 'model_best.pth');
  await vscode.commands.executeCommand('neuralLineage.inspectCheckpoint', checkpoint);
  // The report is a read-only Markdown document shown in the Markdown preview.
  const report = await reportDocument(checkpoint);
  const markdown = report.getText();
  const expected = assertReport(markdown, 'b7t8d/model_best.pth');
  for (const tensor of expected.tensors) assert.ok(markdown.includes(`\`${tensor.replace(/_/g, '\\_')}\``), `tensor ${tensor} not listed:\n${markdown}`);
  assert.doesNotMatch(markdown, /\$\((error|warning)\)/, 'codicon syntax leaks into the preview');
  const tab = await waitFor('a preview tab for the report', () =>
    vscode.window.tabGroups.all.flatMap((g) => g.tabs).find((t) => t.label.includes('model_best.pth')));
  assert.ok(tab.input instanceof vscode.TabInputWebview, `the report opened as ${tab.input && tab.input.constructor.name}, not a preview`);
  await screenshot('inspect-model-best', { text: 'module.head.weight' });
});

test('neuralLineage.inspectCheckpoint on an unreadable file reports it without throwing', async () => {
  await closeEditors();
  const checkpoint = workspaceUri('broken', 'truncated.pt');
  await vscode.commands.executeCommand('neuralLineage.inspectCheckpoint', checkpoint);
  const report = await reportDocument(checkpoint);
  assert.match(report.getText(), /Unreadable/);
  await closeEditors();
});

test('neuralLineage.maxFileSizeMB reaches the server: larger checkpoints are not read', async () => {
  const document = await vscode.workspace.openTextDocument(workspaceUri('train.py'));
  const position = positionOf(document, 'models/8j4/weights.pth');
  const config = vscode.workspace.getConfiguration('neuralLineage');
  await config.update('maxFileSizeMB', 0.05, vscode.ConfigurationTarget.Workspace);
  try {
    const text = await checkpointHover(document.uri, position, (t) => /maxFileSizeMB/.test(t));
    assert.match(text, /larger than neuralLineage\.maxFileSizeMB/);
  } finally {
    await config.update('maxFileSizeMB', undefined, vscode.ConfigurationTarget.Workspace);
  }
  assertReport(await checkpointHover(document.uri, position), '8j4/weights.pth');
});

test('opening Python, YAML and notebooks with checkpoint paths produces no errors', async () => {
  const opened = [];
  for (const file of ['train.py', 'config.yaml']) opened.push((await openAt(file, 'models/')).document.uri.toString());
  const notebook = await vscode.workspace.openNotebookDocument(workspaceUri('analysis.ipynb'));
  await vscode.window.showNotebookDocument(notebook);
  opened.push(...notebook.getCells().map((cell) => cell.document.uri.toString()));
  await settle(2000);
  const errors = errorDiagnostics((uri) => opened.includes(uri.toString()));
  assert.deepEqual(errors.map(({ uri, d }) => `${uri}:${d.range.start.line + 1}: ${d.message}`), []);
  // The server is still up and answering after everything above.
  const document = await vscode.workspace.openTextDocument(workspaceUri('train.py'));
  assertReport(await checkpointHover(document.uri, positionOf(document, 'models/b7t8d/model_best.pth')), 'b7t8d/model_best.pth');
  await closeEditors();
});

/** The demo checkpoint truth.json names for a relation, and its parent (paths under models/). */
function demoEdge(relation) {
  const model = TRUTH.models.find((m) => m.relation === relation);
  assert.ok(model, `no ${relation} model in truth.json`);
  return { child: `models/${model.path}`, parent: `models/${model.parent}` };
}

test('hover names the detected parent of a checkpoint, with links to the graph', async () => {
  const { child, parent } = demoEdge('fp16');
  const document = await vscode.workspace.openTextDocument({ language: 'python', content: `weights = torch.load("${workspaceUri(...child.split('/')).fsPath}")\n` });
  await vscode.window.showTextDocument(document);
  const text = await checkpointHover(document.uri, positionOf(document, path.basename(child)), (markdown) => markdown.includes('copy of'));
  assert.match(text, /16-bit copy of/);
  assert.ok(text.includes(parent), `the hover names ${parent}:\n${text}`);
  assert.match(text, /command:neuralLineage\.showGraph/);
  await closeEditors();
});

test('Show Lineage Graph opens the ancestry graph webview', async () => {
  await vscode.commands.executeCommand('neuralLineage.showGraph');
  await waitFor('the graph panel', () =>
    vscode.window.tabGroups.all.flatMap((group) => group.tabs).find((tab) => tab.input instanceof vscode.TabInputWebview && tab.input.viewType.includes('neuralLineage.graph')));
  await screenshot('graph', { text: 'checkpoints' });
  await closeEditors();
});

test('opening a checkpoint file shows the checkpoint viewer instead of binary', async () => {
  const { child } = demoEdge('pruned');
  await vscode.commands.executeCommand('vscode.open', workspaceUri(...child.split('/')));
  await waitFor('the checkpoint viewer', () =>
    vscode.window.tabGroups.all.flatMap((group) => group.tabs).find((tab) => tab.input instanceof vscode.TabInputCustom && tab.input.viewType === 'neuralLineage.checkpoint'));
  await screenshot('checkpoint-viewer', { text: 'Lineage' });
  await closeEditors();
});

test('Compare with Parent shows per-layer differences', async () => {
  const { child } = demoEdge('pruned');
  const uri = workspaceUri(...child.split('/'));
  // The command reads the client's copy of the graph: wait until the server has placed the copy.
  const probe = await vscode.workspace.openTextDocument({ language: 'python', content: `x = "${uri.fsPath}"\n` });
  await checkpointHover(probe.uri, positionOf(probe, path.basename(child)), (markdown) => markdown.includes('pruned copy of'));
  await vscode.commands.executeCommand('neuralLineage.compareWithParent', uri);
  const report = await reportDocument(uri);
  assert.match(report.getText(), /\| layer \| parameters \| relative change \| cosine \|/);
  await closeEditors();
});

test('Rescan re-reads the workspace and the lineage survives it', async () => {
  await vscode.commands.executeCommand('neuralLineage.rescan');
  const { child, parent } = demoEdge('fp16');
  const document = await vscode.workspace.openTextDocument({ language: 'python', content: `x = "${workspaceUri(...child.split('/')).fsPath}"\n` });
  const text = await checkpointHover(document.uri, positionOf(document, path.basename(child)), (markdown) => markdown.includes('copy of'));
  assert.ok(text.includes(parent));
  await closeEditors();
});

/** Runs a command that asks through quick picks, accepting the highlighted item each time. */
async function runAcceptingPicks(command, argument, picks) {
  const pending = vscode.commands.executeCommand(command, argument);
  for (let pick = 0; pick < picks; pick++) {
    await settle(1500);
    await vscode.commands.executeCommand('workbench.action.acceptSelectedQuickOpenItem');
  }
  await withTimeout(Promise.resolve(pending), 60_000, command);
}

/** The URI of the active editor tab, whether a text editor or the checkpoint viewer. */
function activeTabUri() {
  const input = vscode.window.tabGroups.activeTabGroup.activeTab?.input;
  return input && 'uri' in input ? input.uri.toString() : undefined;
}

test('Show Ancestors and Show Descendants list the lineage and open the picked checkpoint', async () => {
  const { child, parent } = demoEdge('fp16');
  const childUri = workspaceUri(...child.split('/'));
  const parentUri = workspaceUri(...parent.split('/'));
  await runAcceptingPicks('neuralLineage.showAncestors', childUri, 1);
  await waitFor('the parent to open', () => activeTabUri() === parentUri.toString());
  await closeEditors();
  await runAcceptingPicks('neuralLineage.showDescendants', parentUri, 1);
  await waitFor('the child to open', () => activeTabUri() === childUri.toString());
  await closeEditors();
});

test('Find Parent ranks the workspace checkpoints and puts the parent first', async () => {
  const { child, parent } = demoEdge('pruned');
  await runAcceptingPicks('neuralLineage.findParent', workspaceUri(...child.split('/')), 3);
  await waitFor('the parent to open', () => activeTabUri() === workspaceUri(...parent.split('/')).toString());
  await closeEditors();
});

test('Compare Checkpoints asks for the second checkpoint and shows the per-layer comparison', async () => {
  const { child } = demoEdge('fp16');
  const uri = workspaceUri(...child.split('/'));
  // The pick lists the client's copy of the graph: wait until the server has indexed the workspace.
  const probe = await vscode.workspace.openTextDocument({ language: 'python', content: `x = "${uri.fsPath}"\n` });
  await checkpointHover(probe.uri, positionOf(probe, path.basename(child)), (markdown) => markdown.includes('copy of'));
  await runAcceptingPicks('neuralLineage.compareCheckpoints', uri, 1);
  const report = await reportDocument(uri);
  assert.match(report.getText(), / vs /);
  assert.match(report.getText(), /related|unrelated/);
  await closeEditors();
});

test('Select Compute Device writes the chosen device to the settings', async () => {
  const configuration = () => vscode.workspace.getConfiguration('neuralLineage');
  assert.equal(configuration().get('device'), 'auto');
  const pending = vscode.commands.executeCommand('neuralLineage.selectDevice');
  await settle(1500);
  await vscode.commands.executeCommand('workbench.action.quickOpenSelectNext');
  await vscode.commands.executeCommand('workbench.action.acceptSelectedQuickOpenItem');
  await withTimeout(Promise.resolve(pending), 30_000, 'neuralLineage.selectDevice');
  await waitFor('the device setting to change', () => configuration().get('device') === 'gpu');
  await configuration().update('device', undefined, vscode.ConfigurationTarget.Global);
});

test('restarts the language server after it crashes, and answers hovers again', async () => {
  // Last in the suite: the restarted server re-reads the workspace from its cache.
  const serverModule = path.join(extension().extensionPath, 'dist', 'server.js');
  const serverProcesses = () =>
    childProcess.execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' })
      .split('\n')
      .filter((line) => line.includes(serverModule))
      .map((line) => Number(line.trim().split(/\s+/)[0]));
  const [crashed, ...others] = serverProcesses();
  assert.ok(crashed && others.length === 0, `one server process runs: ${[crashed, ...others]}`);
  process.kill(crashed, 'SIGKILL');
  await waitFor('the client to start a new server', () => {
    const now = serverProcesses();
    return now.length === 1 && now[0] !== crashed;
  });
  const written = 'models/b7t8d/model_best.pth';
  const { document, position } = await openAt('train.py', written);
  // Until the restarted server has indexed again, so the window does not close on its updates.
  const text = await checkpointHover(document.uri, position, (markdown) => /parameters/.test(markdown) && !/indexing/.test(markdown));
  assertReport(text, 'b7t8d/model_best.pth');
  await settle(2000);
  await closeEditors();
});

exports.helpers = { test, waitFor, settle, hoverText, checkpointHover, openAt, positionOf, expectedReport, assertReport, reportDocument, screenshot, workspaceUri, closeEditors, log };
