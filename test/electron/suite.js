// Runs inside VS Code's extension host (test-electron's contract: export run()).
// Opens a Python file that names a fixture checkpoint and checks the extension's hover.
const assert = require('node:assert/strict');
const vscode = require('vscode');

exports.run = async function run() {
  const folder = vscode.workspace.workspaceFolders[0].uri;
  const document = await vscode.workspace.openTextDocument({
    language: 'python',
    content: `import torch\nstate = torch.load("${vscode.Uri.joinPath(folder, 'torch', 'state_dict.pt').fsPath}")\n`,
  });
  await vscode.window.showTextDocument(document);
  await vscode.extensions.getExtension('neural-lineage.neural-lineage').activate();
  const position = new vscode.Position(1, document.lineAt(1).text.indexOf('state_dict.pt'));
  let text = '';
  for (let attempt = 0; attempt < 50 && !text.includes('parameters'); attempt++) {
    const hovers = await vscode.commands.executeCommand('vscode.executeHoverProvider', document.uri, position);
    text = hovers.flatMap((hover) => hover.contents.map((part) => part.value ?? String(part))).join('\n');
    if (!text.includes('parameters')) await new Promise((resolve) => setTimeout(resolve, 200));
  }
  assert.match(text, /pytorch-zip/);
  assert.match(text, /parameters/);
};
