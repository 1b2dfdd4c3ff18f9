import * as vscode from 'vscode';
import type { LineageModel } from './lineageModel';
import { RELATION_WORDS } from '../../server/src/engine/lineage/derived';
import { nodeName, percent, RELATION_BADGE } from './presentation';

/** Explorer badges on checkpoints with a known parent (and on unreadable ones), with a tooltip naming it. */
export class LineageDecorations implements vscode.FileDecorationProvider, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<vscode.Uri[] | undefined>();
  readonly onDidChangeFileDecorations = this.changed.event;
  private readonly subscription: vscode.Disposable;

  constructor(private readonly model: LineageModel) {
    this.subscription = model.onDidChange(() => this.changed.fire(undefined));
  }

  provideFileDecoration(uri: vscode.Uri): vscode.FileDecoration | undefined {
    const node = this.model.node(uri);
    if (!node) return undefined;
    if (node.error) return { badge: '!', tooltip: `Unreadable checkpoint: ${node.error}`, color: new vscode.ThemeColor('list.warningForeground') };
    const edge = this.model.parentEdge(uri);
    if (!edge) return undefined;
    const parent = nodeName(this.model.graph.nodes.find((candidate) => candidate.uri === edge.parent), edge.parent);
    return { badge: RELATION_BADGE[edge.relation], tooltip: `${RELATION_WORDS[edge.relation]} ${parent} (${percent(edge.confidence)})` };
  }

  dispose(): void {
    this.subscription.dispose();
    this.changed.dispose();
  }
}
