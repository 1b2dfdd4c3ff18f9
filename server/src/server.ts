/**
 * The language server: a thin shell that wires the engine to LSP. It answers hovers on
 * checkpoint paths in any document and the custom requests declared in protocol.ts.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TextDocument } from 'vscode-languageserver-textdocument';
import {
  createConnection,
  MarkupKind,
  ProposedFeatures,
  TextDocuments,
  TextDocumentSyncKind,
  type Hover,
  type WorkspaceFolder,
} from 'vscode-languageserver/node';
import { checkpointPathAt, resolveCandidates } from './checkpointPaths';
import { inspectCheckpoint, type InspectReport } from './engine/inspect';
import { InspectRequest, type LineageSettings } from './protocol';
import { reportMarkdown } from './reportMarkdown';

const connection = createConnection(ProposedFeatures.all);
const documents = new TextDocuments(TextDocument);
let workspaceFolders: WorkspaceFolder[] = [];
let settings: LineageSettings = { maxFileSizeMB: 0 };

connection.onInitialize((params) => {
  workspaceFolders = params.workspaceFolders ?? [];
  return {
    capabilities: {
      textDocumentSync: TextDocumentSyncKind.Incremental,
      hoverProvider: true,
      workspace: { workspaceFolders: { supported: true, changeNotifications: true } },
    },
  };
});

connection.onInitialized(async () => {
  connection.workspace.onDidChangeWorkspaceFolders((event) => {
    const removed = new Set(event.removed.map((folder) => folder.uri));
    workspaceFolders = [...workspaceFolders.filter((folder) => !removed.has(folder.uri)), ...event.added];
  });
  await refreshSettings();
});

connection.onDidChangeConfiguration(() => refreshSettings());

async function refreshSettings(): Promise<void> {
  const section = (await connection.workspace.getConfiguration('neuralLineage')) as Partial<LineageSettings> | null;
  settings = { maxFileSizeMB: section?.maxFileSizeMB ?? 0 };
  reports.clear();
}

/** Reports keyed by file identity, so a hover never re-reads an unchanged checkpoint. */
const reports = new Map<string, { identity: string; report: Promise<InspectReport> }>();

async function reportFor(file: string): Promise<InspectReport> {
  const stat = await fs.stat(file);
  const identity = `${stat.size}:${stat.mtimeMs}`;
  const cached = reports.get(file);
  if (cached?.identity === identity) return cached.report;
  const limit = settings.maxFileSizeMB * 1024 * 1024;
  const report =
    limit > 0 && stat.size > limit
      ? Promise.resolve(oversized(file, stat.size))
      : inspectCheckpoint(file);
  reports.set(file, { identity, report });
  return report;
}

function oversized(file: string, size: number): InspectReport {
  const error = `${file}: larger than neuralLineage.maxFileSizeMB (${settings.maxFileSizeMB} MB), not read (${Math.round(size / 1048576)} MB)`;
  return { path: file, tensorCount: 0, parameterCount: 0, byteSize: 0, dtypes: {}, tensors: [], metadata: {}, warnings: [], error };
}

async function existingFile(candidates: readonly string[]): Promise<string | undefined> {
  for (const candidate of candidates) {
    const stat = await fs.stat(candidate).catch(() => undefined);
    if (stat?.isFile()) return candidate;
  }
  return undefined;
}

connection.onHover(async ({ textDocument, position }): Promise<Hover | null> => {
  const document = documents.get(textDocument.uri);
  if (!document) return null;
  const line = document.getText({ start: { line: position.line, character: 0 }, end: { line: position.line + 1, character: 0 } });
  const found = checkpointPathAt(line.replace(/\r?\n$/, ''), position.character);
  if (!found) return null;
  const documentDir = textDocument.uri.startsWith('file:') ? path.dirname(fileURLToPath(textDocument.uri)) : undefined;
  const folders = workspaceFolders.filter((folder) => folder.uri.startsWith('file:')).map((folder) => fileURLToPath(folder.uri));
  const file = await existingFile(resolveCandidates(found.text, documentDir, folders));
  if (!file) return null;
  return {
    contents: { kind: MarkupKind.Markdown, value: reportMarkdown(await reportFor(file)) },
    range: { start: { line: position.line, character: found.start }, end: { line: position.line, character: found.end } },
  };
});

connection.onRequest(InspectRequest, async ({ uri }) => {
  const report = await reportFor(fileURLToPath(uri));
  return { report, markdown: reportMarkdown(report, true) };
});

documents.listen(connection);
connection.listen();
