/**
 * The extension's client: starts the language server and turns its answers into VS Code UI.
 * All reading of checkpoints happens in the server process, never in the extension host.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { LanguageClient, TransportKind, type LanguageClientOptions, type ServerOptions } from 'vscode-languageclient/node';
import { InspectRequest } from '../../server/src/protocol';

const INSPECT_SCHEME = 'neural-lineage-inspect';
let client: LanguageClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const serverModule = context.asAbsolutePath(path.join('dist', 'server.js'));
  const serverOptions: ServerOptions = {
    run: { module: serverModule, transport: TransportKind.ipc },
    debug: { module: serverModule, transport: TransportKind.ipc, options: { execArgv: ['--nolazy', '--inspect=6009'] } },
  };
  const clientOptions: LanguageClientOptions = {
    // Checkpoint paths appear in code, configs, notebooks and prose alike.
    documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }, { scheme: 'vscode-notebook-cell' }],
    synchronize: { configurationSection: 'neuralLineage' },
    outputChannelName: 'Neural Lineage',
  };
  client = new LanguageClient('neuralLineage', 'Neural Lineage', serverOptions, clientOptions);
  await client.start();

  const reports = new InspectReports(client);
  context.subscriptions.push(
    vscode.workspace.registerTextDocumentContentProvider(INSPECT_SCHEME, reports),
    vscode.commands.registerCommand('neuralLineage.inspectCheckpoint', (target?: vscode.Uri) => inspect(target)),
  );
}

export function deactivate(): Thenable<void> | undefined {
  return client?.stop();
}

/** Serves the read-only Markdown view of a checkpoint's report. */
class InspectReports implements vscode.TextDocumentContentProvider {
  constructor(private readonly languageClient: LanguageClient) {}

  async provideTextDocumentContent(uri: vscode.Uri): Promise<string> {
    const checkpoint = vscode.Uri.parse(uri.query);
    const { markdown } = await this.languageClient.sendRequest(InspectRequest, { uri: checkpoint.toString() });
    return markdown.replace(/\$\((error|warning)\) /g, '');
  }
}

async function inspect(target: vscode.Uri | undefined): Promise<void> {
  const checkpoint = target ?? vscode.window.activeTextEditor?.document.uri ?? (await pickCheckpoint());
  if (!checkpoint) return;
  const view = vscode.Uri.from({ scheme: INSPECT_SCHEME, path: `/${path.basename(checkpoint.fsPath)}.md`, query: checkpoint.toString() });
  await vscode.commands.executeCommand('markdown.showPreview', view);
}

async function pickCheckpoint(): Promise<vscode.Uri | undefined> {
  const picked = await vscode.window.showOpenDialog({
    canSelectMany: false,
    openLabel: 'Inspect',
    filters: { Checkpoints: ['safetensors', 'pt', 'pth', 'ckpt', 'bin', 'npz', 'npy', 'json'] },
  });
  return picked?.[0];
}
