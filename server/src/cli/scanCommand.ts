import type { FingerprintCache } from '../engine/fingerprint/cache';
import { scanFolder, type ScanResult } from '../engine/lineage/scan';

export type ScanFormat = 'text' | 'json' | 'dot' | 'mermaid';

/** `neural-lineage scan DIR`: every checkpoint and the lineage graph. */
export async function runScan(
  folder: string,
  format: ScanFormat,
  cache: FingerprintCache,
  write: (text: string) => void,
  progress: (text: string) => void,
): Promise<number> {
  const result = await scanFolder(folder, {
    cache,
    onProgress: (done, total, file) => progress(`fingerprinting ${done}/${total} ${file}`),
  });
  progress('');
  const render = { text: renderText, json: (r: ScanResult) => JSON.stringify(r, null, 2) + '\n', dot: renderDot, mermaid: renderMermaid }[format];
  write(render(result));
  return result.checkpoints.some((checkpoint) => checkpoint.error) ? 1 : 0;
}

function renderText(result: ScanResult): string {
  const lines: string[] = [];
  const children = new Map<string, typeof result.edges[number][]>();
  const hasParent = new Set<string>();
  for (const edge of result.edges) {
    children.set(edge.parent, [...(children.get(edge.parent) ?? []), edge]);
    hasParent.add(edge.child);
  }
  const describe = (file: string) => {
    const checkpoint = result.checkpoints.find((c) => c.path === file);
    return `${file}${checkpoint?.format ? `  [${checkpoint.format}, ${checkpoint.parameters?.toLocaleString('en-US')} params]` : ''}`;
  };
  const walk = (file: string, prefix: string) => {
    const edges = children.get(file) ?? [];
    edges.forEach((edge, i) => {
      const last = i === edges.length - 1;
      lines.push(`${prefix}${last ? '└─' : '├─'} ${edge.relation} ${edge.confidence.toFixed(2)} → ${describe(edge.child)}`);
      walk(edge.child, prefix + (last ? '   ' : '│  '));
    });
  };
  for (const family of result.families) {
    for (const root of family.filter((file) => !hasParent.has(file))) {
      lines.push(describe(root));
      walk(root, '');
    }
  }
  for (const conflict of result.conflicts) lines.push(`conflict: ${conflict.message}`);
  for (const checkpoint of result.checkpoints.filter((c) => c.error)) lines.push(`unreadable: ${checkpoint.error}`);
  for (const warning of result.warnings) lines.push(`warning: ${warning}`);
  lines.push(`${result.checkpoints.length} checkpoints, ${result.families.length} families, ${result.edges.length} edges`);
  return lines.join('\n') + '\n';
}

function quote(text: string): string {
  return JSON.stringify(text);
}

function renderDot(result: ScanResult): string {
  const lines = ['digraph lineage {', '  rankdir=TB;', '  node [shape=box];'];
  for (const checkpoint of result.checkpoints) lines.push(`  ${quote(checkpoint.path)}${checkpoint.error ? ' [color=red]' : ''};`);
  for (const edge of result.edges) {
    lines.push(`  ${quote(edge.parent)} -> ${quote(edge.child)} [label=${quote(`${edge.relation} ${edge.confidence.toFixed(2)}`)}${edge.relation === 'finetune' ? '' : ', style=dashed'}];`);
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}

function renderMermaid(result: ScanResult): string {
  const ids = new Map(result.checkpoints.map((checkpoint, i) => [checkpoint.path, `n${i}`]));
  const lines = ['graph TD'];
  for (const checkpoint of result.checkpoints) lines.push(`  ${ids.get(checkpoint.path)}[${quote(checkpoint.path)}]`);
  for (const edge of result.edges) {
    const arrow = edge.relation === 'finetune' ? '-->' : '-.->';
    lines.push(`  ${ids.get(edge.parent)} ${arrow}|${edge.relation} ${edge.confidence.toFixed(2)}| ${ids.get(edge.child)}`);
  }
  return lines.join('\n') + '\n';
}
