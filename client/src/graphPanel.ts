/**
 * The "Model Lineage" webview panel: hosts dist/webview/graph.js, sends it the lineage graph and
 * acts on what the user does there (open, reveal, export). One panel at a time; a serializer
 * brings it back after VS Code restarts (the webview restores its own zoom, filter and focus
 * from its saved state).
 */
import * as vscode from 'vscode';
import type { LineageGraph } from '../../server/src/protocol';
import { isWebviewToHostMessage, type HostToWebviewMessage, type WebviewToHostMessage } from './webview/graphMessages';
import { webviewOptions, webviewPage } from './webviewPage';

export const GRAPH_VIEW_TYPE = 'neuralLineage.graph';
const TITLE = 'Model Lineage';

/** Where the graph comes from, asked whenever the webview (re)loads without one. */
export type GraphSource = () => Promise<LineageGraph>;

export class GraphPanel implements vscode.Disposable {
  private static current: GraphPanel | undefined;

  private graph: LineageGraph | undefined;
  /** A focus asked for before the webview was ready; sent with the next graph. */
  private pendingFocus: string | undefined;
  private ready = false;
  private disposed = false;
  private readonly disposables: vscode.Disposable[] = [];

  /** Shows the panel (creating it if needed), optionally focused on one checkpoint's lineage. */
  static show(extensionUri: vscode.Uri, source: GraphSource, focus?: string): GraphPanel {
    const existing = GraphPanel.current;
    if (existing) {
      existing.panel.reveal(undefined, false);
      if (focus !== undefined) existing.focus(focus);
      return existing;
    }
    const panel = vscode.window.createWebviewPanel(GRAPH_VIEW_TYPE, TITLE, vscode.ViewColumn.Active, webviewOptions(extensionUri));
    const created = new GraphPanel(panel, extensionUri, source);
    created.pendingFocus = focus;
    return created;
  }

  /** The open panel, if any: the client forwards graph changes to it. */
  static get instance(): GraphPanel | undefined {
    return GraphPanel.current;
  }

  /** Adopts a panel VS Code restored after a restart. */
  static revive(panel: vscode.WebviewPanel, extensionUri: vscode.Uri, source: GraphSource): GraphPanel {
    GraphPanel.current?.dispose();
    return new GraphPanel(panel, extensionUri, source);
  }

  private constructor(
    private readonly panel: vscode.WebviewPanel,
    private readonly extensionUri: vscode.Uri,
    private readonly source: GraphSource,
  ) {
    GraphPanel.current = this;
    panel.webview.options = webviewOptions(extensionUri);
    this.disposables.push(
      panel.onDidDispose(() => this.dispose()),
      // A hidden webview is torn down (no retainContextWhenHidden); it says `ready` again when shown.
      panel.onDidChangeViewState(() => {
        if (!panel.visible) this.ready = false;
      }),
      panel.webview.onDidReceiveMessage((message: unknown) => {
        if (isWebviewToHostMessage(message)) void this.onMessage(message);
      }),
    );
    panel.webview.html = webviewPage(panel.webview, extensionUri, { name: 'graph', title: TITLE });
  }

  /** Sends a new graph; `focus` (a checkpoint URI) highlights its lineage. */
  update(graph: LineageGraph, focus?: string): void {
    this.graph = graph;
    if (focus !== undefined) this.pendingFocus = focus;
    if (!this.ready) return;
    const sent = this.pendingFocus;
    this.pendingFocus = undefined;
    this.post({ type: 'graph', graph, ...(sent !== undefined ? { focus: sent } : {}) });
  }

  /** Highlights one checkpoint's lineage, or clears the highlight with `undefined`. */
  focus(uri: string | undefined): void {
    if (!this.ready) {
      this.pendingFocus = uri;
      return;
    }
    this.post({ type: 'focus', uri: uri ?? null });
  }

  /** Asks the source for the graph again and sends it. */
  async refresh(): Promise<void> {
    try {
      this.update(await this.source());
    } catch (error) {
      void vscode.window.showErrorMessage(`Neural Lineage: could not load the lineage graph: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (GraphPanel.current === this) GraphPanel.current = undefined;
    this.panel.dispose();
    for (const disposable of this.disposables.splice(0)) disposable.dispose();
  }

  private post(message: HostToWebviewMessage): void {
    void this.panel.webview.postMessage(message);
  }

  private async onMessage(message: WebviewToHostMessage): Promise<void> {
    switch (message.type) {
      case 'ready':
        // Also sent after the webview reloads (its tab was hidden): resend what it had.
        this.ready = true;
        if (this.graph) this.update(this.graph);
        else await this.refresh();
        return;
      case 'open': {
        const uri = this.knownCheckpoint(message.uri);
        if (uri) await vscode.commands.executeCommand('vscode.open', uri, { viewColumn: vscode.ViewColumn.Beside, preview: true });
        return;
      }
      case 'reveal': {
        const uri = this.knownCheckpoint(message.uri);
        if (uri) await vscode.commands.executeCommand('revealInExplorer', uri);
        return;
      }
      case 'exportSvg':
        await this.exportSvg(message.svg);
        return;
      case 'focusChanged':
        return;
    }
  }

  /** Only URIs of the graph's checkpoints are acted on. */
  private knownCheckpoint(uri: string): vscode.Uri | undefined {
    if (!this.graph?.nodes.some((node) => node.uri === uri)) return undefined;
    return vscode.Uri.parse(uri, true);
  }

  private async exportSvg(svg: string): Promise<void> {
    if (!svg.trimStart().startsWith('<?xml') && !svg.trimStart().startsWith('<svg')) return;
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
    const target = await vscode.window.showSaveDialog({
      title: 'Export Lineage Graph',
      saveLabel: 'Export',
      filters: { 'SVG image': ['svg'] },
      ...(folder ? { defaultUri: vscode.Uri.joinPath(folder, 'model-lineage.svg') } : {}),
    });
    if (!target) return;
    try {
      await vscode.workspace.fs.writeFile(target, new TextEncoder().encode(svg));
    } catch (error) {
      void vscode.window.showErrorMessage(`Neural Lineage: could not write ${target.fsPath}: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    const open = await vscode.window.showInformationMessage(`Lineage graph exported to ${vscode.workspace.asRelativePath(target)}.`, 'Open');
    if (open) await vscode.commands.executeCommand('vscode.open', target);
  }
}

/**
 * Lets VS Code restore the graph panel after a restart. The extension must also activate on
 * `onWebviewPanel:neuralLineage.graph` for the serializer to be there in time.
 */
export function registerGraphPanelSerializer(context: vscode.ExtensionContext, source: GraphSource): vscode.Disposable {
  const registration = vscode.window.registerWebviewPanelSerializer(GRAPH_VIEW_TYPE, {
    async deserializeWebviewPanel(panel: vscode.WebviewPanel): Promise<void> {
      GraphPanel.revive(panel, context.extensionUri, source);
    },
  });
  context.subscriptions.push(registration, { dispose: () => GraphPanel.instance?.dispose() });
  return registration;
}
