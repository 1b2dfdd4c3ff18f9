import assert from 'node:assert/strict';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import {
  DidChangeWatchedFilesNotification,
  DidOpenTextDocumentNotification,
  FileChangeType,
  HoverRequest,
  PublishDiagnosticsNotification,
  type MarkupContent,
  type ProtocolConnection,
  type PublishDiagnosticsParams,
} from 'vscode-languageserver-protocol/node';
import { CompareRequest, FindParentRequest, GraphChangedNotification, GraphRequest, LineageRequest, type LineageGraph } from '../../server/src/protocol';
import { fixturePath, makeTempDir } from '../helpers';
import { startLanguageServer } from './languageServer';

/**
 * The language server over real LSP (stdio) on a copy of the bundled demo zoo: ten checkpoints
 * genuinely trained by test/zoo/make_zoo.py, ground truth in test/fixtures/demo/truth.json.
 */
interface Truth {
  models: { path: string; parent: string | null; relation: string | null; family: string }[];
}

const temp = makeTempDir();
const workspace = path.join(temp.dir, 'workspace');
const truth = JSON.parse(readFileSync(fixturePath('demo', 'truth.json'), 'utf8')) as Truth;
let connection: ProtocolConnection;
const versions: number[] = [];
const diagnostics = new Map<string, PublishDiagnosticsParams>();
const uri = (relative: string) => pathToFileURL(path.join(workspace, relative)).toString();
/** A root with children: later copied over the broken file to repair it. */
const root = truth.models.find((model) => model.parent === null && truth.models.some((m) => m.parent === model.path))!;
const brokenName = `broken${path.extname(root.path)}`;

/** Polls the graph until indexing is over and `ready` holds (60 s at most). */
async function settledGraph(ready: (graph: LineageGraph) => boolean = () => true): Promise<LineageGraph> {
  for (let attempt = 0; attempt < 600; attempt++) {
    const graph = await connection.sendRequest(GraphRequest);
    if (!graph.indexing && graph.nodes.length > 0 && ready(graph)) return graph;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('the server never reached the expected graph');
}

let stop: () => void;

before(async () => {
  cpSync(fixturePath('demo', 'models'), workspace, { recursive: true });
  writeFileSync(path.join(workspace, brokenName), Buffer.from([0x10, 0, 0, 0, 0, 0, 0, 0, 0x7b]));
  ({ connection, stop } = await startLanguageServer(workspace, { cacheDirectory: path.join(temp.dir, 'cache') }, (listening) => {
    listening.onNotification(GraphChangedNotification.method, (params: { version: number }) => {
      versions.push(params.version);
    });
    listening.onNotification(PublishDiagnosticsNotification.method, (params: PublishDiagnosticsParams) => {
      diagnostics.set(params.uri, params);
    });
  }));
});

after(() => {
  stop();
  temp.cleanup();
});

test('indexes the workspace and returns every checkpoint, with the corrupt one unreadable', async () => {
  const graph = await settledGraph();
  assert.equal(graph.nodes.length, truth.models.length + 1);
  const broken = graph.nodes.find((node) => node.uri === uri(brokenName));
  assert.ok(broken?.error?.includes(brokenName), broken?.error);
  assert.ok(versions.length > 0, 'graph-changed notifications were sent');
});

test('the graph holds the derived copies and no edge between unrelated families', async () => {
  const graph = await settledGraph();
  const familyOf = new Map(truth.models.map((model) => [uri(model.path), model.family]));
  for (const edge of graph.edges) assert.equal(familyOf.get(edge.parent), familyOf.get(edge.child), `${edge.parent} -> ${edge.child}`);
  for (const model of truth.models.filter((m) => m.relation === 'fp16' || m.relation === 'pruned')) {
    const edge = graph.edges.find((e) => e.child === uri(model.path));
    assert.equal(edge?.parent, uri(model.parent!), `${model.path} comes from ${model.parent}`);
    assert.equal(edge?.relation, model.relation);
  }
  const rightEdges = graph.edges.filter((edge) => truth.models.some((m) => uri(m.path) === edge.child && m.parent && uri(m.parent) === edge.parent));
  assert.ok(rightEdges.length >= 5, `${rightEdges.length} of 7 edges right`);
});

test('hover on a checkpoint path in a Python file names its parent', async () => {
  await settledGraph();
  const copy = truth.models.find((model) => model.relation === 'fp16')!;
  const documentUri = uri('train.py');
  const text = `import torch\nstate = torch.load("${copy.path}")\n`;
  await connection.sendNotification(DidOpenTextDocumentNotification.type, { textDocument: { uri: documentUri, languageId: 'python', version: 1, text } });
  const hover = await connection.sendRequest(HoverRequest.type, { textDocument: { uri: documentUri }, position: { line: 1, character: text.split('\n')[1]!.indexOf(copy.path) + 2 } });
  const markdown = (hover!.contents as MarkupContent).value;
  assert.match(markdown, /16-bit copy of/);
  assert.ok(markdown.includes(copy.parent!), markdown);
  assert.match(markdown, /command:neuralLineage\.showGraph/);
});

test('lineage, find-parent and compare requests answer from the index', async () => {
  await settledGraph();
  const child = truth.models.find((model) => model.relation === 'pruned')!;
  const lineage = await connection.sendRequest(LineageRequest, { uri: uri(child.path) });
  assert.equal(lineage.parent?.parent, uri(child.parent!));
  // The paper's closed-set question: the parent among its other children and an unrelated model.
  const fine = truth.models.find((model) => model.relation === 'finetune' && model.parent === root.path)!;
  const siblings = truth.models.filter((model) => model.parent === root.path && model.relation === 'finetune' && model.path !== fine.path);
  const unrelated = truth.models.find((model) => model.family !== fine.family)!;
  const answer = await connection.sendRequest(FindParentRequest, { child: uri(fine.path), candidates: [root, ...siblings, unrelated].map((model) => uri(model.path)) });
  assert.equal(answer.parent, uri(fine.parent!));
  assert.equal(answer.ranking.find((entry) => entry.candidate === uri(unrelated.path))?.related, false);
  const comparison = await connection.sendRequest(CompareRequest, { a: uri(fine.path), b: uri(fine.parent!) });
  assert.equal(comparison.related, true);
  assert.ok(comparison.layers.length >= 2);
});

test('a changed file updates the graph and a config naming an unrelated base gets a warning', async () => {
  await settledGraph();
  const unrelated = truth.models.find((model) => model.parent === null && !truth.models.some((m) => m.parent === model.path))!;
  const config = path.join(workspace, path.dirname(unrelated.path), 'config.json');
  writeFileSync(config, JSON.stringify({ _name_or_path: path.relative(path.dirname(config), path.join(workspace, root.path)) }, null, 2));
  writeFileSync(path.join(workspace, brokenName), readFileSync(path.join(workspace, root.path)));
  await connection.sendNotification(DidChangeWatchedFilesNotification.type, {
    changes: [
      { uri: pathToFileURL(config).toString(), type: FileChangeType.Created },
      { uri: uri(brokenName), type: FileChangeType.Changed },
    ],
  });
  const graph = await settledGraph((candidate) => candidate.conflicts.length > 0 && !candidate.nodes.find((node) => node.uri === uri(brokenName))?.error);
  const repaired = graph.nodes.find((node) => node.uri === uri(brokenName));
  assert.equal(repaired?.error, undefined);
  assert.ok(graph.edges.some((edge) => edge.relation === 'converted' && [edge.parent, edge.child].includes(uri(brokenName))));
  assert.ok(graph.conflicts.some((conflict) => conflict.child === uri(unrelated.path)));
  for (let attempt = 0; attempt < 50 && !diagnostics.get(pathToFileURL(config).toString())?.diagnostics.length; attempt++) await new Promise((r) => setTimeout(r, 100));
  const published = diagnostics.get(pathToFileURL(config).toString());
  assert.match(String(published?.diagnostics[0]?.message), /unrelated/);
  assert.equal(published?.diagnostics[0]?.range.start.line, 1, 'on the _name_or_path line');
});
