/**
 * The language server: a thin shell that wires the engine to LSP. It indexes the workspace's
 * checkpoints in the background, keeps the lineage graph current as files change, and answers
 * hovers, diagnostics and the custom requests declared in protocol.ts.
 */
import { promises as fs, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { minimatch } from 'minimatch';
import { TextDocument } from 'vscode-languageserver-textdocument';
import {
  createConnection,
  DiagnosticSeverity,
  FileChangeType,
  MarkupKind,
  ProposedFeatures,
  TextDocuments,
  TextDocumentSyncKind,
  type Diagnostic,
  type Hover,
  type WorkspaceFolder,
} from 'vscode-languageserver/node';
import { checkpointPathAt, resolveCandidates } from './checkpointPaths';
import { describeComputeDevices } from './engine/compute/devices';
import { describeError } from './engine/errors';
import { defaultCacheDirectory, FingerprintCache } from './engine/fingerprint/cache';
import { inspectCheckpoint, type InspectReport } from './engine/inspect';
import { compareFingerprints } from './engine/lineage/compare';
import { findParent } from './engine/lineage/parentQuery';
import { WorkspaceIndex, type IndexSnapshot } from './engine/lineage/workspaceIndex';
import { ancestorEdges, descendantEdges, lineageMarkdown } from './lineageMarkdown';
import {
  CompareRequest,
  FindParentRequest,
  GraphChangedNotification,
  GraphRequest,
  InspectRequest,
  LineageRequest,
  RescanRequest,
  type GraphEdge,
  type LineageGraph,
  type LineageSettings,
} from './protocol';
import { reportMarkdown } from './reportMarkdown';

const connection = createConnection(ProposedFeatures.all);
const documents = new TextDocuments(TextDocument);
const DEFAULT_SETTINGS: LineageSettings = { maxFileSizeMB: 0, include: ['**/*'], exclude: ['**/node_modules/**', '**/.git/**'], cacheDirectory: '', device: 'auto', method: 'auto', probeData: '' };
let settings = DEFAULT_SETTINGS;
let workspaceFolders: WorkspaceFolder[] = [];
let storagePath: string | undefined;
let index: WorkspaceIndex | undefined;
let indexing: AbortController | undefined;
let publishedDiagnostics = new Set<string>();
let folderEventsSupported = false;

connection.onInitialize((params) => {
  workspaceFolders = params.workspaceFolders ?? [];
  folderEventsSupported = params.capabilities.workspace?.workspaceFolders === true;
  storagePath = (params.initializationOptions as { storagePath?: string } | undefined)?.storagePath;
  return {
    capabilities: {
      textDocumentSync: TextDocumentSyncKind.Incremental,
      hoverProvider: true,
      workspace: { workspaceFolders: { supported: true, changeNotifications: true } },
    },
  };
});

connection.onInitialized(async () => {
  if (folderEventsSupported) {
    connection.workspace.onDidChangeWorkspaceFolders((event) => {
      const removed = new Set(event.removed.map((folder) => folder.uri));
      workspaceFolders = [...workspaceFolders.filter((folder) => !removed.has(folder.uri)), ...event.added];
      void reindex(false);
    });
  }
  await refreshSettings();
  // Loading TensorFlow.js to report it waits until the first indexing is done.
  void reindex(false).then(logComputeDevices);
});

/** Says in the output channel which compute backends the device setting selects here. */
async function logComputeDevices(): Promise<void> {
  const devices = await describeComputeDevices(settings.device);
  connection.console.info(
    `compute (device: ${devices.preference}): TensorFlow.js ${devices.tfjs.backend ?? `unavailable (${devices.tfjs.error})`}, ` +
      `onnxruntime providers ${devices.onnxruntime.providers.join(' → ') || `unavailable (${devices.onnxruntime.error})`}; ` +
      'the weight method itself runs on the CPU',
  );
}

connection.onDidChangeConfiguration(async () => {
  await refreshSettings();
  void reindex(false);
  void logComputeDevices();
});

async function refreshSettings(): Promise<void> {
  const section = (await connection.workspace.getConfiguration('neuralLineage').then(undefined, () => null)) as Partial<LineageSettings> | null;
  settings = { ...DEFAULT_SETTINGS, ...(section ?? {}) };
  reports.clear();
  const cache = new FingerprintCache(settings.cacheDirectory || (storagePath ? path.join(storagePath, 'fingerprints') : defaultCacheDirectory()));
  index = new WorkspaceIndex({ cache, maxFileBytes: settings.maxFileSizeMB * 1048576, accept: acceptsFile, onWarning: (message) => connection.console.warn(message) });
}

function folderPaths(): string[] {
  return workspaceFolders.filter((folder) => folder.uri.startsWith('file:')).map((folder) => fileURLToPath(folder.uri));
}

/** Include and exclude globs apply to the path relative to its workspace folder. */
function acceptsFile(file: string): boolean {
  const folder = folderPaths().find((root) => !path.relative(root, file).startsWith('..'));
  const relative = folder ? path.relative(folder, file).split(path.sep).join('/') : file;
  const matches = (pattern: string) => minimatch(relative, pattern, { dot: true });
  return settings.include.some(matches) && !settings.exclude.some(matches);
}

/** Indexes every folder with cancellable work-done progress; a new call cancels the previous one. */
async function reindex(force: boolean): Promise<void> {
  if (!index) return;
  indexing?.abort();
  const controller = new AbortController();
  indexing = controller;
  const progress = await connection.window.createWorkDoneProgress();
  progress.begin('Neural Lineage: indexing checkpoints', 0, undefined, true);
  progress.token.onCancellationRequested(() => controller.abort());
  let lastNotice = 0;
  try {
    await index.rebuild(folderPaths(), {
      signal: controller.signal,
      force,
      progress: (done, total, file) => {
        progress.report(Math.round((100 * done) / Math.max(total, 1)), `${done}/${total} ${path.basename(file)}`);
        if (Date.now() - lastNotice > 1000) {
          lastNotice = Date.now();
          graphChanged();
        }
      },
    });
    await index.refreshDeclarations(controller.signal);
    connection.console.info(`indexed ${index.snapshot().checkpoints.length} checkpoints in ${folderPaths().length} folder(s)`);
  } catch (error) {
    connection.console.info(controller.signal.aborted ? 'indexing cancelled' : `indexing failed: ${describeError(error)}`);
  } finally {
    progress.done();
    if (indexing === controller) indexing = undefined;
    graphChanged();
  }
}

const DECLARATION_FILES = new Set(['config.json', 'adapter_config.json', 'README.md', 'trainer_state.json']);

/**
 * Checkpoints changed on disk are re-read alone. Declarations are re-read after any change:
 * they depend on the declaring files and on the checkpoints' own metadata alike.
 */
connection.onDidChangeWatchedFiles(async ({ changes }) => {
  if (!index) return;
  for (const change of changes) {
    if (!change.uri.startsWith('file:')) continue;
    const file = fileURLToPath(change.uri);
    reports.delete(file);
    if (DECLARATION_FILES.has(path.basename(file))) continue;
    if (change.type === FileChangeType.Deleted) index.remove(file);
    else await index.update(file).catch((error) => connection.console.warn(describeError(error)));
  }
  await index.refreshDeclarations().catch((error) => connection.console.warn(describeError(error)));
  graphChanged();
});

function graphChanged(): void {
  if (!index) return;
  const snapshot = index.snapshot();
  publishDiagnostics(snapshot);
  void connection.sendNotification(GraphChangedNotification, { version: snapshot.version });
}

/** A warning on each file that declares a base the weights contradict. */
function publishDiagnostics(snapshot: IndexSnapshot): void {
  const byFile = new Map<string, Diagnostic[]>();
  for (const conflict of snapshot.conflicts) {
    if (!conflict.sourceFile) continue;
    const uri = pathToFileURL(conflict.sourceFile).toString();
    const line = lineOf(conflict.sourceFile, conflict.field);
    byFile.set(uri, [
      ...(byFile.get(uri) ?? []),
      { range: { start: { line, character: 0 }, end: { line, character: Number.MAX_SAFE_INTEGER } }, severity: DiagnosticSeverity.Warning, source: 'Neural Lineage', message: conflict.message },
    ]);
  }
  for (const uri of publishedDiagnostics) if (!byFile.has(uri)) void connection.sendDiagnostics({ uri, diagnostics: [] });
  for (const [uri, diagnostics] of byFile) void connection.sendDiagnostics({ uri, diagnostics });
  publishedDiagnostics = new Set(byFile.keys());
}

/** Line of the declaring field in a small text file (0 when binary, large or not found). */
function lineOf(file: string, field: string | undefined): number {
  const open = documents.get(pathToFileURL(file).toString());
  const text = open?.getText() ?? readSmallText(file);
  if (!text || !field) return 0;
  const line = text.split('\n').findIndex((candidate) => candidate.includes(field));
  return Math.max(line, 0);
}

function readSmallText(file: string): string | undefined {
  try {
    return statSync(file).size < 1048576 && !/\.(safetensors|pt|pth|bin|ckpt|npz|npy)$/.test(file) ? readFileSync(file, 'utf8') : undefined;
  } catch {
    return undefined;
  }
}

/** Reports keyed by file identity, so a hover never re-reads an unchanged checkpoint. */
const reports = new Map<string, { identity: string; report: Promise<InspectReport> }>();

async function reportFor(file: string): Promise<InspectReport> {
  const stat = await fs.stat(file);
  const identity = `${stat.size}:${stat.mtimeMs}`;
  const cached = reports.get(file);
  if (cached?.identity === identity) return cached.report;
  const limit = settings.maxFileSizeMB * 1048576;
  const report =
    limit > 0 && stat.size > limit
      ? Promise.resolve(unreadable(file, `${file}: larger than neuralLineage.maxFileSizeMB (${settings.maxFileSizeMB} MB), not read`))
      : inspectCheckpoint(file);
  reports.set(file, { identity, report });
  return report;
}

function unreadable(file: string, error: string): InspectReport {
  return { path: file, tensorCount: 0, parameterCount: 0, byteSize: 0, dtypes: {}, tensors: [], metadata: {}, warnings: [], error };
}

async function existingFile(candidates: readonly string[]): Promise<string | undefined> {
  for (const candidate of candidates) {
    const stat = await fs.stat(candidate).catch(() => undefined);
    if (stat?.isFile()) return candidate;
  }
  return undefined;
}

function label(file: string): string {
  const folder = folderPaths().find((root) => !path.relative(root, file).startsWith('..'));
  return folder ? path.relative(folder, file) : file;
}

connection.onHover(async ({ textDocument, position }): Promise<Hover | null> => {
  const document = documents.get(textDocument.uri);
  if (!document) return null;
  const line = document.getText({ start: { line: position.line, character: 0 }, end: { line: position.line + 1, character: 0 } });
  const found = checkpointPathAt(line.replace(/\r?\n$/, ''), position.character);
  if (!found) return null;
  const documentDir = textDocument.uri.startsWith('file:') ? path.dirname(fileURLToPath(textDocument.uri)) : undefined;
  const file = await existingFile(resolveCandidates(found.text, documentDir, folderPaths()));
  if (!file) return null;
  const lineage = index ? lineageMarkdown(index.snapshot(), file, label) : undefined;
  return {
    contents: { kind: MarkupKind.Markdown, value: reportMarkdown(await reportFor(file), { lineage }) },
    range: { start: { line: position.line, character: found.start }, end: { line: position.line, character: found.end } },
  };
});

connection.onRequest(InspectRequest, async ({ uri }) => {
  const file = fileURLToPath(uri);
  const report = await reportFor(file).catch((error) => unreadable(file, describeError(error)));
  return { report, markdown: reportMarkdown(report, { listAll: true }) };
});

const toUri = (file: string) => pathToFileURL(file).toString();
const edgeToProtocol = (edge: { parent: string; child: string; relation: GraphEdge['relation']; confidence: number; evidence: string }): GraphEdge => ({
  ...edge,
  parent: toUri(edge.parent),
  child: toUri(edge.child),
});

function graphOf(snapshot: IndexSnapshot): LineageGraph {
  const familyOf = new Map<string, number>();
  snapshot.families.forEach((members, family) => members.forEach((member) => familyOf.set(member, family)));
  return {
    version: snapshot.version,
    nodes: snapshot.checkpoints.map((checkpoint) => ({
      uri: toUri(checkpoint.path),
      label: label(checkpoint.path),
      format: checkpoint.format,
      sizeBytes: checkpoint.sizeBytes,
      parameters: checkpoint.parameters,
      error: checkpoint.error,
      family: familyOf.get(checkpoint.path),
    })),
    edges: snapshot.edges.map(edgeToProtocol),
    families: snapshot.families.map((members) => members.map(toUri)),
    conflicts: snapshot.conflicts.map((conflict) => ({
      child: toUri(conflict.child),
      declaredParent: toUri(conflict.declaredParent),
      message: conflict.message,
      source: conflict.sourceFile ? toUri(conflict.sourceFile) : undefined,
    })),
    indexing: snapshot.indexing,
  };
}

const emptySnapshot: IndexSnapshot = { version: 0, checkpoints: [], edges: [], families: [], conflicts: [], indexing: true };

connection.onRequest(GraphRequest, () => graphOf(index?.snapshot() ?? emptySnapshot));

connection.onRequest(LineageRequest, ({ uri }) => {
  const file = fileURLToPath(uri);
  const snapshot = index?.snapshot() ?? emptySnapshot;
  const graph = graphOf(snapshot);
  const ancestors = ancestorEdges(snapshot, file).map(edgeToProtocol);
  return {
    node: graph.nodes.find((node) => node.uri === uri),
    parent: ancestors[0],
    ancestors,
    descendants: descendantEdges(snapshot, file).map(edgeToProtocol),
    conflicts: graph.conflicts.filter((conflict) => conflict.child === uri),
  };
});

connection.onRequest(FindParentRequest, async ({ child, candidates, method }, token) => {
  if (!index) throw new Error('the server is not initialised');
  const controller = new AbortController();
  token.onCancellationRequested(() => controller.abort());
  const childFile = fileURLToPath(child);
  const childPrint = await index.fingerprintAnywhere(childFile, controller.signal);
  const candidateFiles = candidates?.map((uri) => fileURLToPath(uri)) ?? index.snapshot().checkpoints.filter((c) => !c.error && c.path !== childFile).map((c) => c.path);
  const prints = [];
  for (const file of candidateFiles) prints.push(await index.fingerprintAnywhere(file, controller.signal));
  const answer = await findParent(childPrint, prints, {
    method: method ?? settings.method,
    probe: settings.probeData || undefined,
    device: settings.device,
    signal: controller.signal,
  });
  return {
    child,
    parent: answer.parent ? toUri(answer.parent) : undefined,
    ranking: answer.ranking.map((entry) => ({
      candidate: toUri(entry.candidate),
      probability: entry.probability,
      related: entry.related,
      relativeDistance: entry.relativeDistance ?? undefined,
    })),
    method: answer.method,
    details: answer.details,
    ...(answer.noParent === undefined ? {} : { noParent: answer.noParent }),
  };
});

connection.onRequest(CompareRequest, async ({ a, b }) => {
  if (!index) throw new Error('the server is not initialised');
  const comparison = compareFingerprints(await index.fingerprintAnywhere(fileURLToPath(a)), await index.fingerprintAnywhere(fileURLToPath(b)));
  return {
    a,
    b,
    related: comparison.related,
    relativeDistance: Number.isFinite(comparison.relativeDistance) ? comparison.relativeDistance : undefined,
    layers: comparison.layers.map((layer) => ({
      name: layer.name,
      parameters: layer.count,
      relativeDistance: layer.referenceSquared > 0 ? Math.sqrt(layer.squaredDistance / layer.referenceSquared) : 0,
      cosine: layer.cosine,
    })),
    replaced: [...comparison.reinitialised, ...comparison.reshaped.map((reshaped) => reshaped.name)],
  };
});

connection.onRequest(RescanRequest, () => reindex(true));

documents.listen(connection);
connection.listen();
