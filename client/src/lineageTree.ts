import * as vscode from 'vscode';
import type { GraphEdge, GraphNode } from '../../server/src/protocol';
import type { LineageModel } from './lineageModel';
import { RELATION_WORDS } from '../../server/src/engine/lineage/derived';
import { formatBytes } from '../../server/src/engine/units';
import { nodeName, percent } from './presentation';

/** Items of the "Model Lineage" view: families, then each family's roots and their descendants. */
export type LineageItem = { kind: 'family'; index: number; roots: string[] } | { kind: 'checkpoint'; uri: string; edge?: GraphEdge } | { kind: 'unreadable'; uri: string };

export class LineageTreeProvider implements vscode.TreeDataProvider<LineageItem>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<LineageItem | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly subscription: vscode.Disposable;

  constructor(private readonly model: LineageModel) {
    this.subscription = model.onDidChange(() => this.changed.fire(undefined));
  }

  getChildren(item?: LineageItem): LineageItem[] {
    const graph = this.model.graph;
    if (!item) {
      const families = graph.families
        .map((members, index): LineageItem => ({ kind: 'family', index, roots: members.filter((member) => !graph.edges.some((edge) => edge.child === member)) }))
        .filter((family) => family.kind === 'family' && family.roots.length > 0);
      const unreadable = graph.nodes.filter((node) => node.error).map((node): LineageItem => ({ kind: 'unreadable', uri: node.uri }));
      return [...families, ...unreadable];
    }
    if (item.kind === 'family') return item.roots.map((uri) => ({ kind: 'checkpoint', uri }));
    if (item.kind === 'checkpoint') return this.model.childEdges(item.uri).map((edge) => ({ kind: 'checkpoint', uri: edge.child, edge }));
    return [];
  }

  getTreeItem(item: LineageItem): vscode.TreeItem {
    const node = (uri: string): GraphNode | undefined => this.model.graph.nodes.find((candidate) => candidate.uri === uri);
    if (item.kind === 'family') {
      const size = this.model.graph.families[item.index]?.length ?? 0;
      const label = item.roots.length === 1 ? nodeName(node(item.roots[0]!), item.roots[0]!) : `family ${item.index + 1}`;
      const tree = new vscode.TreeItem(label, vscode.TreeItemCollapsibleState.Expanded);
      tree.description = size === 1 ? 'no relatives' : `${size} checkpoints`;
      tree.iconPath = new vscode.ThemeIcon('type-hierarchy');
      return tree;
    }
    const uri = vscode.Uri.parse(item.uri);
    const info = node(item.uri);
    const children = item.kind === 'checkpoint' ? this.model.childEdges(item.uri).length : 0;
    const tree = new vscode.TreeItem(uri, children > 0 ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None);
    tree.label = nodeName(info, item.uri);
    tree.contextValue = 'checkpoint';
    tree.command = { command: 'vscode.open', title: 'Open', arguments: [uri] };
    if (item.kind === 'unreadable') {
      tree.description = 'unreadable';
      tree.tooltip = info?.error;
      tree.iconPath = new vscode.ThemeIcon('warning');
      return tree;
    }
    const parts = [info?.format, info ? formatBytes(info.sizeBytes) : undefined];
    if (item.edge) parts.unshift(`${item.edge.relation} ${percent(item.edge.confidence)}`);
    tree.description = parts.filter(Boolean).join(' · ');
    tree.tooltip = item.edge ? `${RELATION_WORDS[item.edge.relation]} its parent (${percent(item.edge.confidence)})\n${item.edge.evidence}` : 'root: no parent among the workspace checkpoints';
    tree.iconPath = new vscode.ThemeIcon(item.edge ? 'symbol-file' : 'package');
    return tree;
  }

  getParent(item: LineageItem): LineageItem | undefined {
    if (item.kind !== 'checkpoint') return undefined;
    const edge = this.model.graph.edges.find((candidate) => candidate.child === item.uri);
    if (edge) return { kind: 'checkpoint', uri: edge.parent, edge: this.model.graph.edges.find((candidate) => candidate.child === edge.parent) };
    const index = this.model.graph.families.findIndex((members) => members.includes(item.uri));
    return index < 0 ? undefined : { kind: 'family', index, roots: this.model.graph.families[index]!.filter((member) => !this.model.graph.edges.some((e) => e.child === member)) };
  }

  dispose(): void {
    this.subscription.dispose();
    this.changed.dispose();
  }
}
