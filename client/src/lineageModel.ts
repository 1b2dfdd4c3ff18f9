import * as vscode from 'vscode';
import type { LanguageClient } from 'vscode-languageclient/node';
import { GraphChangedNotification, GraphRequest, type GraphEdge, type GraphNode, type LineageGraph } from '../../server/src/protocol';

/**
 * The client's copy of the server's lineage graph, refreshed when the server says it changed.
 * Decorations, the tree view, the status bar and the webviews all read it from here.
 */
export class LineageModel implements vscode.Disposable {
  private current: LineageGraph = { version: 0, nodes: [], edges: [], families: [], conflicts: [], indexing: true };
  private readonly changed = new vscode.EventEmitter<LineageGraph>();
  readonly onDidChange = this.changed.event;
  private readonly subscription: vscode.Disposable;
  private refreshing: Promise<void> | undefined;
  private stale = false;

  constructor(private readonly client: LanguageClient) {
    this.subscription = client.onNotification(GraphChangedNotification, () => void this.refresh());
  }

  get graph(): LineageGraph {
    return this.current;
  }

  /**
   * Fetches the graph; calls made while a fetch runs are folded into one more fetch. A fetch
   * cut off by a server crash keeps the last graph: the client restarts the server, which
   * indexes again and says the graph changed.
   */
  refresh(): Promise<void> {
    if (this.refreshing) {
      this.stale = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.stale = false;
        const graph = await this.client.sendRequest(GraphRequest).catch(() => undefined);
        if (graph && (graph.version >= this.current.version || graph.nodes.length !== this.current.nodes.length)) {
          this.current = graph;
          this.changed.fire(graph);
        }
      } while (this.stale);
    })().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  node(uri: vscode.Uri): GraphNode | undefined {
    const key = uri.toString();
    return this.current.nodes.find((node) => node.uri === key);
  }

  parentEdge(uri: vscode.Uri): GraphEdge | undefined {
    const key = uri.toString();
    return this.current.edges.find((edge) => edge.child === key);
  }

  childEdges(uri: string): GraphEdge[] {
    return this.current.edges.filter((edge) => edge.parent === uri);
  }

  dispose(): void {
    this.subscription.dispose();
    this.changed.dispose();
  }
}
