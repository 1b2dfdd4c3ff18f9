/**
 * The extension's client: starts the language server and turns its answers into VS Code UI —
 * hovers (from the server), explorer badges, the Model Lineage tree, the ancestry graph, the
 * checkpoint viewer and the command palette's queries. Checkpoints are read only in the
 * server's process, never in the extension host.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { LanguageClient, TransportKind, type LanguageClientOptions, type ServerOptions } from 'vscode-languageclient/node';
import { CompareRequest, GraphRequest, InspectRequest, LineageRequest } from '../../server/src/protocol';
import { registerCheckpointEditor } from './checkpointEditor';
import { registerCommands } from './commands';
import { LineageDecorations } from './decorations';
import { GraphPanel, registerGraphPanelSerializer } from './graphPanel';
import { LineageModel } from './lineageModel';
import { LineageTreeProvider } from './lineageTree';
import { ReportDocuments } from './reports';

/** Files whose changes the server must hear of: checkpoints and the files that declare lineage. */
const WATCHED = '**/{*.safetensors,*.pt,*.pth,*.ckpt,*.bin,*.npz,*.npy,*.onnx,*.gguf,*.tflite,*.h5,*.hdf5,*.keras,model.json,*.index.json,config.json,adapter_config.json,README.md,trainer_state.json}';
/** Commands the hover's links may run. */
const HOVER_COMMANDS = ['neuralLineage.showGraph', 'neuralLineage.compareWithParent', 'vscode.open'];

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
    synchronize: { configurationSection: 'neuralLineage', fileEvents: vscode.workspace.createFileSystemWatcher(WATCHED) },
    initializationOptions: { storagePath: context.globalStorageUri.fsPath },
    outputChannelName: 'Neural Lineage',
    middleware: {
      // The server's hover links to the extension's commands; only those are trusted.
      provideHover: async (document, position, token, next) => {
        const hover = await next(document, position, token);
        for (const content of hover?.contents ?? []) {
          if (content instanceof vscode.MarkdownString) {
            content.isTrusted = { enabledCommands: HOVER_COMMANDS };
            content.supportThemeIcons = true;
          }
        }
        return hover;
      },
    },
  };
  client = new LanguageClient('neuralLineage', 'Neural Lineage', serverOptions, clientOptions);
  await client.start();
  const languageClient = client;

  const model = new LineageModel(languageClient);
  const graphSource = () => languageClient.sendRequest(GraphRequest);
  const showGraph = (focus?: vscode.Uri) => GraphPanel.show(context.extensionUri, graphSource, focus?.toString());
  const tree = new LineageTreeProvider(model);
  const status = vscode.window.createStatusBarItem('neuralLineage.status', vscode.StatusBarAlignment.Left, 10);
  status.name = 'Neural Lineage';
  status.command = 'neuralLineage.showGraph';

  const graphChanged = new vscode.EventEmitter<void>();
  context.subscriptions.push(
    model,
    graphChanged,
    status,
    tree,
    ReportDocuments.register(languageClient),
    vscode.window.registerFileDecorationProvider(new LineageDecorations(model)),
    vscode.window.createTreeView('neuralLineage.tree', { treeDataProvider: tree, showCollapseAll: true }),
    ...registerCommands(languageClient, model, showGraph),
    model.onDidChange((graph) => {
      graphChanged.fire();
      GraphPanel.instance?.update(graph);
      const readable = graph.nodes.filter((node) => !node.error).length;
      status.text = graph.indexing ? `$(sync~spin) Lineage: indexing ${readable}…` : `$(type-hierarchy) ${readable} checkpoints`;
      status.tooltip = graph.indexing
        ? 'Neural Lineage is fingerprinting the workspace checkpoints'
        : `${graph.edges.length} lineage links, ${graph.conflicts.length} conflicts — click for the ancestry graph`;
      if (graph.nodes.length > 0) status.show();
    }),
  );
  registerGraphPanelSerializer(context, graphSource);
  registerCheckpointEditor(context, {
    inspect: (uri, token) => languageClient.sendRequest(InspectRequest, { uri: uri.toString() }, token),
    lineage: (uri, token) => languageClient.sendRequest(LineageRequest, { uri: uri.toString() }, token),
    compare: (a, b, token) => languageClient.sendRequest(CompareRequest, { a: a.toString(), b: b.toString() }, token),
    onGraphChanged: graphChanged.event,
  });
  void model.refresh();
}

export function deactivate(): Thenable<void> | undefined {
  return client?.stop();
}
