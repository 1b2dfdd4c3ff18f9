import * as path from 'node:path';
import * as vscode from 'vscode';
import type { LanguageClient } from 'vscode-languageclient/node';
import { CompareRequest, InspectRequest, type CompareResult } from '../../server/src/protocol';

/**
 * Read-only Markdown reports shown in the Markdown preview: a checkpoint's inspect report and
 * the per-layer comparison of two checkpoints. Their content is asked of the server when shown.
 */
const SCHEME = 'neural-lineage-report';

export class ReportDocuments implements vscode.TextDocumentContentProvider {
  constructor(private readonly client: LanguageClient) {}

  static register(client: LanguageClient): vscode.Disposable {
    return vscode.workspace.registerTextDocumentContentProvider(SCHEME, new ReportDocuments(client));
  }

  async provideTextDocumentContent(uri: vscode.Uri): Promise<string> {
    const query = JSON.parse(uri.query) as { inspect?: string; a?: string; b?: string };
    if (query.inspect) {
      const { markdown } = await this.client.sendRequest(InspectRequest, { uri: query.inspect });
      return markdown.replace(/\$\((error|warning)\) /g, '');
    }
    return comparisonMarkdown(await this.client.sendRequest(CompareRequest, { a: query.a!, b: query.b! }));
  }
}

export async function showInspectReport(checkpoint: vscode.Uri): Promise<void> {
  const view = vscode.Uri.from({ scheme: SCHEME, path: `/${path.basename(checkpoint.fsPath)}.md`, query: JSON.stringify({ inspect: checkpoint.toString() }) });
  await vscode.commands.executeCommand('markdown.showPreview', view);
}

export async function showComparison(a: vscode.Uri, b: vscode.Uri): Promise<void> {
  const name = `${path.basename(a.fsPath)} vs ${path.basename(b.fsPath)}.md`;
  const view = vscode.Uri.from({ scheme: SCHEME, path: `/${name}`, query: JSON.stringify({ a: a.toString(), b: b.toString() }) });
  await vscode.commands.executeCommand('markdown.showPreview', view);
}

function comparisonMarkdown(result: CompareResult): string {
  const name = (uri: string) => vscode.workspace.asRelativePath(vscode.Uri.parse(uri));
  const lines = [`# ${name(result.a)} vs ${name(result.b)}`, ''];
  if (!result.related) {
    lines.push('These checkpoints are **unrelated**: their shared layers are no closer than independently trained models.');
  } else {
    lines.push(`Relative weight distance **${result.relativeDistance?.toPrecision(3)}** (‖a − b‖ / ‖b‖ over the related layers).`);
  }
  if (result.replaced.length > 0) lines.push('', `Replaced or re-initialised: ${result.replaced.map((layer) => `\`${layer}\``).join(', ')}`);
  if (result.layers.length > 0) {
    lines.push('', '| layer | parameters | relative change | cosine |', '|---|---:|---:|---:|');
    for (const layer of result.layers) {
      lines.push(`| \`${layer.name}\` | ${layer.parameters.toLocaleString('en-US')} | ${layer.relativeDistance.toPrecision(3)} | ${layer.cosine.toFixed(4)} |`);
    }
  }
  return lines.join('\n') + '\n';
}
