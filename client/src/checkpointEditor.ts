/**
 * The checkpoint viewer: a read-only custom editor that shows a checkpoint's summary, tensors,
 * declared metadata, lineage and per-layer change against its parent instead of binary noise.
 * The page lives in client/src/webview/checkpoint.ts; everything it shows comes from a data
 * source (the language server), never from reading the file here.
 */
import * as vscode from 'vscode';
import type { CompareResult, FileLineage, InspectResult } from '../../server/src/protocol';
import {
  isCheckpointWebviewMessage,
  type CheckpointHostMessage,
  type CheckpointLineage,
  type CheckpointWebviewMessage,
} from './webview/checkpointMessages';
import { webviewOptions, webviewPage } from './webviewPage';

/** Where the viewer gets its answers; the extension implements it with LSP requests. */
export interface CheckpointDataSource {
  inspect(uri: vscode.Uri, token: vscode.CancellationToken): Promise<InspectResult>;
  lineage(uri: vscode.Uri, token: vscode.CancellationToken): Promise<FileLineage>;
  /** Compares `a` (the checkpoint) with `b` (its parent): relative distances are ‖a − b‖ / ‖b‖. */
  compare(a: vscode.Uri, b: vscode.Uri, token: vscode.CancellationToken): Promise<CompareResult>;
  /** Fires whenever the lineage graph changes (a checkpoint indexed, changed, renamed or deleted). */
  readonly onGraphChanged: vscode.Event<void>;
}


/** Commands the viewer's links and buttons run (registered by the extension). */
const SHOW_GRAPH_COMMAND = 'neuralLineage.showGraph';
const COMPARE_WITH_PARENT_COMMAND = 'neuralLineage.compareWithParent';

/** Graph-change notifications arrive in bursts while the workspace is indexed. */
const REFRESH_DELAY_MS = 300;

/** The document of a read-only viewer: only its URI; all content comes from the data source. */
class CheckpointDocument implements vscode.CustomDocument {
  constructor(readonly uri: vscode.Uri) {}
  dispose(): void {}
}

export class CheckpointEditorProvider implements vscode.CustomReadonlyEditorProvider<CheckpointDocument> {
  static readonly viewType = 'neuralLineage.checkpoint';

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly dataSource: CheckpointDataSource,
  ) {}

  openCustomDocument(uri: vscode.Uri): CheckpointDocument {
    return new CheckpointDocument(uri);
  }

  resolveCustomEditor(document: CheckpointDocument, panel: vscode.WebviewPanel): void {
    const webview = panel.webview;
    webview.options = webviewOptions(this.extensionUri);
    webview.html = webviewPage(webview, this.extensionUri, { name: 'checkpoint', title: 'Checkpoint', body: '<main id="app"></main>' });
    new CheckpointView(document.uri, panel, this.dataSource);
  }
}

/** Registers the viewer for the checkpoint file types contributed in package.json. */
export function registerCheckpointEditor(context: vscode.ExtensionContext, dataSource: CheckpointDataSource): vscode.Disposable {
  const registration = vscode.window.registerCustomEditorProvider(CheckpointEditorProvider.viewType, new CheckpointEditorProvider(context.extensionUri, dataSource), {
    supportsMultipleEditorsPerDocument: true,
    webviewOptions: { retainContextWhenHidden: false },
  });
  context.subscriptions.push(registration);
  return registration;
}

/** One open viewer: answers the page's messages and keeps what it shows current. */
class CheckpointView {
  private readonly disposables: vscode.Disposable[] = [];
  /** Increases with every load; answers of an older load are dropped. */
  private generation = 0;
  private loading: vscode.CancellationTokenSource | undefined;
  /** Whether the page got a `model` since it last said `ready`. */
  private modelPosted = false;
  /** What changed while the viewer was hidden. */
  private stale: 'none' | 'lineage' | 'file' = 'none';
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  /** URIs the page may ask to open: this file and those its lineage names. */
  private allowed = new Set<string>();
  private disposed = false;

  constructor(
    private readonly uri: vscode.Uri,
    private readonly panel: vscode.WebviewPanel,
    private readonly dataSource: CheckpointDataSource,
  ) {
    this.allowed.add(uri.toString());
    this.disposables.push(
      panel.webview.onDidReceiveMessage((message: unknown) => this.receive(message)),
      dataSource.onGraphChanged(() => this.changed('lineage')),
      panel.onDidChangeViewState(() => {
        if (panel.visible && this.stale !== 'none') this.schedule(this.stale);
      }),
      panel.onDidDispose(() => this.dispose()),
    );
    if (uri.scheme === 'file') {
      const watcher = vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(vscode.Uri.joinPath(uri, '..'), basename(uri)));
      this.disposables.push(watcher, watcher.onDidChange(() => this.changed('file')), watcher.onDidCreate(() => this.changed('file')), watcher.onDidDelete(() => this.changed('file')));
    }
  }

  private dispose(): void {
    this.disposed = true;
    clearTimeout(this.refreshTimer);
    this.loading?.cancel();
    this.loading?.dispose();
    for (const disposable of this.disposables.splice(0)) disposable.dispose();
  }

  private receive(message: unknown): void {
    if (!isCheckpointWebviewMessage(message)) return;
    void this.handle(message).catch((error: unknown) => {
      void vscode.window.showErrorMessage(`Neural Lineage: ${describe(error)}`);
    });
  }

  private async handle(message: CheckpointWebviewMessage): Promise<void> {
    switch (message.type) {
      case 'ready':
        this.modelPosted = false;
        this.stale = 'none';
        await this.load(true);
        return;
      case 'open': {
        const target = this.target(message.uri);
        if (target) await vscode.commands.executeCommand('vscode.open', target, message.beside ? vscode.ViewColumn.Beside : undefined);
        return;
      }
      case 'showInGraph': {
        const target = this.target(message.uri);
        if (target) await vscode.commands.executeCommand(SHOW_GRAPH_COMMAND, target);
        return;
      }
      case 'compareWithParent':
        await vscode.commands.executeCommand(COMPARE_WITH_PARENT_COMMAND, this.uri);
        return;
    }
  }

  /** The URI the page asks for, when it is one the page was given. */
  private target(uri: string): vscode.Uri | undefined {
    if (!this.allowed.has(uri)) return undefined;
    try {
      return vscode.Uri.parse(uri, true);
    } catch {
      return undefined;
    }
  }

  /** Something changed: refresh now when visible, else when next shown. */
  private changed(what: 'lineage' | 'file'): void {
    const kind = what === 'file' || this.stale === 'file' ? 'file' : 'lineage';
    if (!this.panel.visible) {
      this.stale = kind;
      return;
    }
    this.schedule(kind);
  }

  private schedule(kind: 'lineage' | 'file'): void {
    this.stale = kind;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => {
      const full = this.stale === 'file' || !this.modelPosted;
      this.stale = 'none';
      void this.load(full);
    }, REFRESH_DELAY_MS);
  }

  /** Inspects the file (when `full`), then looks up its lineage and compares it with its parent. */
  private async load(full: boolean): Promise<void> {
    this.loading?.cancel();
    this.loading?.dispose();
    const source = (this.loading = new vscode.CancellationTokenSource());
    const token = source.token;
    const generation = ++this.generation;
    const current = (): boolean => !this.disposed && generation === this.generation;

    const lineage = settle(this.dataSource.lineage(this.uri, token));
    if (full) {
      let inspect: InspectResult;
      try {
        inspect = await this.dataSource.inspect(this.uri, token);
      } catch (error) {
        if (current()) this.post({ type: 'failed', message: describe(error) });
        return;
      }
      if (!current()) return;
      this.post({ type: 'model', model: { inspect: inspect }, lineagePending: true });
      this.modelPosted = true;
    }

    const answer = await lineage;
    if (!current()) return;
    if (!answer.ok) {
      this.post({ type: 'lineage', error: describe(answer.error) });
      return;
    }
    const found = answer.value;
    this.allow(found);
    const parent = found.parent?.parent;
    if (!parent) {
      this.post({ type: 'lineage', lineage: found });
      return;
    }
    this.post({ type: 'lineage', lineage: found, comparisonPending: true });
    try {
      const comparison = await this.dataSource.compare(this.uri, vscode.Uri.parse(parent, true), token);
      if (current()) this.post({ type: 'lineage', lineage: found, parentComparison: comparison });
    } catch (error) {
      if (current()) this.post({ type: 'lineage', lineage: found, error: describe(error) });
    }
  }

  private allow(lineage: CheckpointLineage): void {
    const allowed = new Set<string>([this.uri.toString()]);
    if (lineage.node) allowed.add(lineage.node.uri);
    for (const edge of [...(lineage.parent ? [lineage.parent] : []), ...lineage.ancestors, ...lineage.descendants]) {
      allowed.add(edge.parent);
      allowed.add(edge.child);
    }
    for (const conflict of lineage.conflicts) {
      allowed.add(conflict.declaredParent);
      if (conflict.source) allowed.add(conflict.source);
    }
    this.allowed = allowed;
  }

  private post(message: CheckpointHostMessage): void {
    if (!this.disposed) void this.panel.webview.postMessage(message);
  }
}

function settle<T>(promise: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  return promise.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function basename(uri: vscode.Uri): string {
  const parts = uri.path.split('/');
  return parts[parts.length - 1] ?? uri.path;
}
