import { inspectCheckpoint, type InspectReport } from '../engine/inspect';
import { formatBytes, formatCount, formatShape } from '../engine/units';

/** How many tensors the human-readable listing shows before summarising the rest. */
const LISTED_TENSORS = 25;

export interface InspectOptions {
  readonly json: boolean;
  readonly all: boolean;
}

/** `neural-lineage inspect FILE...`: returns the process exit code (1 when any file failed). */
export async function runInspect(files: readonly string[], options: InspectOptions, write: (text: string) => void): Promise<number> {
  const reports: InspectReport[] = [];
  for (const file of files) reports.push(await inspectCheckpoint(file));
  if (options.json) {
    write(JSON.stringify(reports.length === 1 ? reports[0] : reports, null, 2) + '\n');
  } else {
    write(reports.map((report) => renderReport(report, options.all)).join('\n'));
  }
  return reports.some((report) => report.error) ? 1 : 0;
}

function renderReport(report: InspectReport, all: boolean): string {
  const lines = [report.path];
  if (report.error) {
    lines.push(`  error       ${report.error}`);
    return lines.join('\n') + '\n';
  }
  lines.push(`  format      ${report.format}`);
  lines.push(`  tensors     ${report.tensorCount}`);
  lines.push(`  parameters  ${report.parameterCount.toLocaleString('en-US')} (${formatCount(report.parameterCount)}, ${formatBytes(report.byteSize)})`);
  const dtypes = Object.entries(report.dtypes).map(
    ([dtype, use]) => `${dtype} ×${use.tensors} (${formatCount(use.parameters)})`,
  );
  lines.push(`  dtypes      ${dtypes.join(', ') || '—'}`);
  const metadata = Object.entries(report.metadata);
  if (metadata.length > 0) {
    lines.push('  metadata');
    for (const [key, value] of metadata) lines.push(`    ${key}: ${typeof value === 'string' ? value : JSON.stringify(value)}`);
  }
  for (const warning of report.warnings) lines.push(`  warning     ${warning}`);
  const shown = all ? report.tensors : report.tensors.slice(0, LISTED_TENSORS);
  if (shown.length > 0) {
    const width = Math.max(...shown.map((tensor) => tensor.name.length));
    lines.push('  shapes');
    for (const tensor of shown) lines.push(`    ${tensor.name.padEnd(width)}  ${tensor.dtype.padEnd(7)} ${formatShape(tensor.shape)}`);
    const hidden = report.tensors.length - shown.length;
    if (hidden > 0) lines.push(`    … ${hidden} more (--all lists every tensor)`);
  }
  return lines.join('\n') + '\n';
}
