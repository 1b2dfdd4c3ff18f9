import * as path from 'node:path';
import type { InspectReport } from './engine/inspect';
import { formatBytes, formatCount, formatShape } from './engine/units';

/** Tensors listed in a hover before the rest are summarised. */
const HOVER_TENSORS = 5;

/**
 * Renders an inspect report as Markdown for hovers and the inspect view. `lineage`, when
 * given, goes right under the summary line: in a hover, the parent matters more than shapes.
 */
export function reportMarkdown(report: InspectReport, options: { listAll?: boolean; lineage?: string } = {}): string {
  const title = `**${escape(path.basename(report.path))}**`;
  if (report.error) return `${title}\n\n$(error) Unreadable: ${escape(report.error)}`;
  const listAll = options.listAll ?? false;
  const lines = [
    `${title} — ${report.format} · ${report.parameterCount.toLocaleString('en-US')} parameters (${formatCount(report.parameterCount)}, ${formatBytes(report.byteSize)}) in ${report.tensorCount} tensors`,
  ];
  if (options.lineage) lines.push('', options.lineage, '', '---');
  lines.push(
    '',
    `dtypes: ${Object.entries(report.dtypes).map(([dtype, use]) => `${dtype} ×${use.tensors}`).join(', ') || '—'}`,
  );
  const metadata = Object.entries(report.metadata);
  if (metadata.length > 0) {
    lines.push('', 'declared metadata:');
    for (const [key, value] of metadata.slice(0, 12)) {
      lines.push(`- \`${escape(key)}\`: ${escape(typeof value === 'string' ? value : JSON.stringify(value))}`);
    }
  }
  const shown = listAll ? report.tensors : report.tensors.slice(0, HOVER_TENSORS);
  if (shown.length > 0) {
    lines.push('', '| tensor | dtype | shape |', '|---|---|---|');
    for (const tensor of shown) lines.push(`| \`${escape(tensor.name)}\` | ${tensor.dtype} | ${formatShape(tensor.shape)} |`);
    if (report.tensors.length > shown.length) lines.push('', `… and ${report.tensors.length - shown.length} more tensors`);
  }
  for (const warning of report.warnings) lines.push('', `$(warning) ${escape(warning)}`);
  return lines.join('\n');
}

function escape(text: string): string {
  return text.replace(/[\\`*_{}[\]<>|]/g, (character) => `\\${character}`);
}
