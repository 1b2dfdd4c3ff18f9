/**
 * End to end: scan the small model zoo (real PyTorch training, see test/zoo/README.md) and
 * check the recovered lineage against its truth.json.
 *
 * The zoo lives in .cache/zoo/small; smallZoo.ts builds it when it is missing or stale.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { FingerprintCache } from '../../server/src/engine/fingerprint/cache';
import type { Fingerprint } from '../../server/src/engine/fingerprint/fingerprint';
import { rankParents } from '../../server/src/engine/lineage/parent';
import { scanFolder, type ScanResult } from '../../server/src/engine/lineage/scan';
import { engineRelation, readZoo, type ZooTruth } from '../bench/zooTruth';
import { makeTempDir } from '../helpers';
import { ensureSmallZoo } from './smallZoo';

/**
 * Thresholds, set a little below what the engine achieves on the small zoo (seed 0, torch
 * 1.13, zoo generator 2: 31 true links incl. conversions, quantized copies, adapters, a merge
 * and a run; 30 closed-set queries). Measured: undirected recall 28/31 = 0.90, directed
 * 27/31 = 0.87 (misses: a root/child reversal in each architecture, a merge parent's own
 * link, and an adapter with no declared base, which fits four bases), closed-set top-1
 * 29/30 = 0.97. The bounds allow one or two more misses each.
 */
const MIN_UNDIRECTED_RECALL = 0.85;
const MIN_DIRECTED_RECALL = 0.8;
const MIN_QUERY_TOP1 = 0.9;

let truth: ZooTruth;
let modelsDir: string;
let result: ScanResult;
let prints: Map<string, Fingerprint>;
let temp: { dir: string; cleanup: () => void };

before(async () => {
  ({ truth, modelsDir } = readZoo(ensureSmallZoo()));
  temp = makeTempDir('zoo-scan-');
  const cache = new FingerprintCache(temp.dir);
  result = await scanFolder(modelsDir, { cache });
  // The scan fingerprinted every file; these are served from the same cache.
  prints = new Map();
  for (const model of truth.models) prints.set(model.path, { ...(await cache.get(path.join(modelsDir, model.path))), path: model.path });
  assert.equal(cache.computed, truth.models.length, 'each checkpoint is fingerprinted once');
});
after(() => temp?.cleanup());

const key = (parent: string, child: string) => `${parent} -> ${child}`;
const undirected = (a: string, b: string) => [a, b].sort().join(' -- ');

test('the zoo is the small preset', () => {
  assert.equal(truth.preset, 'small');
  assert.ok(truth.models.length >= 15, `${truth.models.length} models`);
  assert.ok(truth.queries.length >= 10, `${truth.queries.length} queries`);
});

test('every checkpoint is read without error, and nothing else is listed', () => {
  const errors = result.checkpoints.filter((checkpoint) => checkpoint.error);
  assert.deepEqual(errors, []);
  assert.deepEqual(result.checkpoints.map((checkpoint) => checkpoint.path).sort(), truth.models.map((model) => model.path).sort());
  for (const checkpoint of result.checkpoints) assert.ok((checkpoint.parameters ?? 0) > 0, checkpoint.path);
});

/** Each true (parent, child) link; merges have several. */
function truthLinks(): { parent: string; child: string; relation: string | null }[] {
  return truth.models.flatMap((model) => model.parents.map((parent) => ({ parent, child: model.path, relation: engineRelation(model.relation) })));
}

test('no edge or family joins different families', () => {
  const familyOf = new Map(truth.models.map((model) => [model.path, model.family]));
  // An adapter that declares no base fits every base of its shape; it is hung on one of them
  // with the confidence shared among them, not counted as a claim.
  const guessed = (edge: { relation: string; confidence: number }) => edge.relation === 'adapter' && edge.confidence <= 0.5;
  const crossing = result.edges.filter((edge) => !guessed(edge) && familyOf.get(edge.parent) !== familyOf.get(edge.child));
  assert.deepEqual(crossing, []);
  const guessedAdapters = new Set(result.edges.filter(guessed).map((edge) => edge.child));
  for (const family of result.families) {
    const members = family.filter((member) => !guessedAdapters.has(member));
    assert.equal(new Set(members.map((member) => familyOf.get(member))).size, 1, `family ${family.join(', ')}`);
  }
  // Every checkpoint is in exactly one family.
  assert.deepEqual(result.families.flat().sort(), truth.models.map((model) => model.path).sort());
  // One edge into each non-root at most, except the merges, which get one from each parent.
  const merges = new Set(truth.models.filter((model) => model.relation === 'merged').map((model) => model.path));
  const children = result.edges.map((edge) => edge.child).filter((child) => !merges.has(child));
  assert.equal(new Set(children).size, children.length, 'each checkpoint but a merge has at most one parent');
});

/** Relations other than fine-tuning, each of which the zoo holds. */
const TYPED = ['fp16', 'pruned', 'converted', 'quantized', 'adapter', 'merged', 'run'];

test('derived copies, adapters, merges and run checkpoints are typed and hung on their parents', () => {
  const typedModels = truth.models.filter((model) => TYPED.includes(engineRelation(model.relation) ?? ''));
  assert.deepEqual([...new Set(typedModels.map((model) => engineRelation(model.relation)))].sort(), [...TYPED].sort(), 'the zoo has every kind');
  const wrong: string[] = [];
  for (const model of typedModels) {
    const relation = engineRelation(model.relation);
    const into = result.edges.filter((edge) => edge.child === model.path);
    const parents = into.map((edge) => edge.parent).sort();
    // An adapter with no declared base fits every base of its shape: the weights cannot choose.
    const ambiguousAdapter = relation === 'adapter' && model.format === 'peft-adapter' && into[0]?.confidence !== 1;
    if (into.some((edge) => edge.relation !== relation) || (!ambiguousAdapter && parents.join() !== [...model.parents].sort().join())) {
      wrong.push(`${model.id} (${relation}): ${into.map((edge) => `${edge.relation} from ${edge.parent}`).join(', ') || 'no edge'}`);
    }
    if (relation !== 'run') assert.ok(!result.edges.some((other) => other.parent === model.path), `${model.id} is a leaf`);
  }
  assert.deepEqual(wrong, []);
  // Nothing else is typed.
  const typedEdges = [...new Set(result.edges.filter((edge) => edge.relation !== 'finetune').map((edge) => edge.child))].sort();
  assert.deepEqual(typedEdges, typedModels.map((model) => model.path).sort());
});

test('edge recall', (t) => {
  const truthEdges = truthLinks();
  const directed = new Set(truthEdges.map((link) => key(link.parent, link.child)));
  const anyDirection = new Set(truthEdges.map((link) => undirected(link.parent, link.child)));
  const foundDirected = result.edges.filter((edge) => directed.has(key(edge.parent, edge.child))).length;
  const foundUndirected = result.edges.filter((edge) => anyDirection.has(undirected(edge.parent, edge.child))).length;
  const undirectedRecall = foundUndirected / truthEdges.length;
  const directedRecall = foundDirected / truthEdges.length;
  const idOf = new Map(truth.models.map((model) => [model.path, model.id]));
  const missed = truthEdges.filter((link) => !result.edges.some((edge) => edge.parent === link.parent && edge.child === link.child));
  t.diagnostic(
    `${result.edges.length} edges found, ${truthEdges.length} true: undirected recall ${foundUndirected}/${truthEdges.length} = ${undirectedRecall.toFixed(3)}, ` +
      `directed ${foundDirected}/${truthEdges.length} = ${directedRecall.toFixed(3)}`,
  );
  if (missed.length > 0) t.diagnostic(`not recovered as directed: ${missed.map((link) => `${idOf.get(link.parent)} -> ${idOf.get(link.child)}`).join('; ')}`);
  assert.ok(undirectedRecall >= MIN_UNDIRECTED_RECALL, `undirected recall ${undirectedRecall} < ${MIN_UNDIRECTED_RECALL}`);
  assert.ok(directedRecall >= MIN_DIRECTED_RECALL, `directed recall ${directedRecall} < ${MIN_DIRECTED_RECALL}`);
});

test('closed-set parent queries', (t) => {
  let right = 0;
  const wrong: string[] = [];
  const idOf = new Map(truth.models.map((model) => [model.path, model.id]));
  for (const query of truth.queries) {
    const child = prints.get(query.query)!;
    const answer = rankParents(child, query.candidates.map((candidate) => prints.get(candidate.path)!));
    const total = answer.ranking.reduce((sum, entry) => sum + entry.probability, 0);
    assert.ok(Math.abs(total - 1) < 1e-9, `${idOf.get(query.query)}: probabilities sum to ${total}`);
    // An unmerged adapter is placed by the modules it fits, which bases of other families have too.
    const adapter = truth.models.find((model) => model.path === query.query)?.format === 'peft-adapter';
    for (const entry of adapter ? [] : answer.ranking) {
      const kind = query.candidates.find((candidate) => candidate.path === entry.fingerprint.path)!.kind;
      if (kind === 'unrelated') assert.equal(entry.probability, 0, `${idOf.get(query.query)}: unrelated candidate ${idOf.get(entry.fingerprint.path)}`);
    }
    if (answer.parent?.fingerprint.path === query.true_parent) right++;
    else wrong.push(`${idOf.get(query.query)} (${query.setting}) → ${answer.parent ? idOf.get(answer.parent.fingerprint.path) : 'none'}`);
  }
  const top1 = right / truth.queries.length;
  t.diagnostic(`top-1 ${right}/${truth.queries.length} = ${top1.toFixed(3)}${wrong.length ? `; wrong: ${wrong.join('; ')}` : ''}`);
  assert.ok(top1 >= MIN_QUERY_TOP1, `top-1 ${top1} < ${MIN_QUERY_TOP1}: ${wrong.join('; ')}`);
});
