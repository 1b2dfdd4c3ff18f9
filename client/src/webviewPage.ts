import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';

/**
 * The options and HTML shared by the extension's webviews: scripts allowed, resources only
 * from the bundles and media/, and a strict content security policy whose nonce is new on
 * every render. Only the nonce and webview URIs are written into the HTML, never user data.
 */
export function webviewOptions(extensionUri: vscode.Uri): vscode.WebviewOptions {
  return {
    enableScripts: true,
    localResourceRoots: [vscode.Uri.joinPath(extensionUri, 'dist', 'webview'), vscode.Uri.joinPath(extensionUri, 'media')],
  };
}

export function webviewPage(webview: vscode.Webview, extensionUri: vscode.Uri, page: { name: 'graph' | 'checkpoint'; title: string; body?: string }): string {
  const nonce = randomBytes(18).toString('base64');
  const script = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'dist', 'webview', `${page.name}.js`));
  const style = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'media', `${page.name}.css`));
  const csp = `default-src 'none'; img-src ${webview.cspSource} data:; style-src ${webview.cspSource}; script-src 'nonce-${nonce}';`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <meta http-equiv="Content-Security-Policy" content="${csp}">
  <meta name="viewport" content="width=device-width, initial-scale=1.0">
  <link rel="stylesheet" href="${style.toString()}">
  <title>${page.title}</title>
</head>
<body>
  ${page.body ?? ''}
  <script nonce="${nonce}" src="${script.toString()}"></script>
</body>
</html>`;
}
