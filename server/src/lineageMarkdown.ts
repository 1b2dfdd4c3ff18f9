import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { IndexConflict, IndexSnapshot } from './engine/lineage/workspaceIndex';
import { RELATION_WORDS } from './engine/lineage/derived';
import type { LineageEdge } from './engine/lineage/scan';

/** The chain of edges from a checkpoint's parent up to its root. */
export function ancestorEdges(snapshot: IndexSnapshot, file: string): LineageEdge[] {
  const chain: LineageEdge[] = [];
  const seen = new Set([file]);
  for (let edge = snapshot.edges.find((e) => e.child === file); edge && !seen.has(edge.parent); edge = snapshot.edges.find((e) => e.child === edge!.parent)) {
    chain.push(edge);
    seen.add(edge.parent);
  }
  return chain;
}

/** Edges to every descendant, breadth first. */
export function descendantEdges(snapshot: IndexSnapshot, file: string): LineageEdge[] {
  const found: LineageEdge[] = [];
  const queue = [file];
  const seen = new Set(queue);
  for (let i = 0; i < queue.length; i++) {
    for (const edge of snapshot.edges.filter((e) => e.parent === queue[i])) {
      if (seen.has(edge.child)) continue;
      seen.add(edge.child);
      found.push(edge);
      queue.push(edge.child);
    }
  }
  return found;
}

function commandLink(title: string, command: string, ...args: unknown[]): string {
  return `[${title}](command:${command}?${encodeURIComponent(JSON.stringify(args))})`;
}

/** The lineage part of a checkpoint's hover: parent, ancestors, children, conflicts, actions. */
export function lineageMarkdown(snapshot: IndexSnapshot, file: string, label: (file: string) => string): string {
  const lines: string[] = [];
  const ancestors = ancestorEdges(snapshot, file);
  const parent = ancestors[0];
  const uri = pathToFileURL(file).toString();
  // A merge has an edge from each of its parents; the chain of ancestors follows the first.
  const parents = snapshot.edges.filter((edge) => edge.child === file);
  if (parent) {
    const named = parents.map((edge) => `\`${label(edge.parent)}\``).join(' + ');
    lines.push(`**${RELATION_WORDS[parent.relation]}** ${named} — confidence ${(parent.confidence * 100).toFixed(0)}%`);
    lines.push('', `_${parent.evidence}_`);
    if (ancestors.length > 1) lines.push('', `ancestors: ${ancestors.slice(1).map((edge) => `\`${label(edge.parent)}\``).join(' ← ')}`);
  } else if (snapshot.checkpoints.some((checkpoint) => checkpoint.path === file && !checkpoint.error)) {
    lines.push(snapshot.indexing ? '_lineage: indexing…_' : '**root**: no parent among the workspace checkpoints');
  }
  const children = snapshot.edges.filter((edge) => edge.parent === file);
  if (children.length > 0) lines.push('', `children: ${children.map((edge) => `\`${path.basename(label(edge.child))}\``).join(', ')}`);
  for (const conflict of snapshot.conflicts.filter((c: IndexConflict) => c.child === file)) lines.push('', `$(warning) ${conflict.message}`);
  const actions = [commandLink('Show in graph', 'neuralLineage.showGraph', uri)];
  if (parent) actions.push(commandLink('Compare with parent', 'neuralLineage.compareWithParent', uri));
  actions.push(commandLink('Open', 'vscode.open', uri));
  lines.push('', actions.join(' · '));
  return lines.join('\n');
}
