import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FingerprintCache } from '../../server/src/engine/fingerprint/cache';
import { fingerprintFile, type Fingerprint } from '../../server/src/engine/fingerprint/fingerprint';
import { compareFingerprints, isWeight, type Comparison } from '../../server/src/engine/lineage/compare';
import { derivedCopy, roundToBfloat16, roundToHalf } from '../../server/src/engine/lineage/derived';
import { rankParents } from '../../server/src/engine/lineage/parent';
import { findCheckpoints, lineageOf, scanFolder } from '../../server/src/engine/lineage/scan';
import { familyTree } from '../../server/src/engine/lineage/tree';
import { makeTempDir } from '../helpers';
import {
  BUFFERS, SHAPES, TABLES, encodeValues, finetune, mapWeights, modelWriter, pruned, randomModel, referenceRound,
  type Model, type ModelWriter, type Storage,
} from './syntheticModels';
import { seededRandom } from './random';
import { encodeSafetensors } from './safetensorsWriter';

let temp: { dir: string; cleanup: () => void };
let writeModel: ModelWriter;
before(() => {
  temp = makeTempDir('lineage-test-');
  writeModel = modelWriter(temp.dir);
});
after(() => temp.cleanup());


const bits = new Uint32Array(1);
const asFloat = new Float32Array(bits.buffer);
function float32FromBits(pattern: number): number {
  bits[0] = pattern >>> 0;
  return asFloat[0]!;
}
function bitsOfFloat32(value: number): number {
  asFloat[0] = value;
  return bits[0]!;
}

describe('16-bit rounding', () => {
  for (const [dtype, round] of [['F16', roundToHalf], ['BF16', roundToBfloat16]] as const) {
    const { values, infinityCode } = TABLES[dtype];

    test(`${dtype}: every representable value rounds to itself`, () => {
      for (let code = 0; code < 65536; code++) {
        const value = values[code]!;
        const rounded = round(value);
        if (Number.isNaN(value)) assert.ok(Number.isNaN(rounded), `code ${code.toString(16)}`);
        else assert.ok(Object.is(rounded, value), `code ${code.toString(16)}: ${value} → ${rounded}`);
      }
    });

    test(`${dtype}: midpoints round to even, their float32 neighbours to the nearer value`, () => {
      let checked = 0;
      for (let code = 0; code < infinityCode; code++) {
        const below = values[code]!;
        const above = code + 1 < infinityCode ? values[code + 1]! : TABLES[dtype].beyond;
        const midpoint = (below + above) / 2;
        assert.equal(Math.fround(midpoint), midpoint, 'midpoints are float32 values');
        const even = code % 2 === 0 ? below : code + 1 < infinityCode ? above : Infinity;
        const nearAbove = code + 1 < infinityCode ? above : Infinity;
        const cases: [number, number][] = [
          [midpoint, even],
          [float32FromBits(bitsOfFloat32(midpoint) - 1), below],
          [float32FromBits(bitsOfFloat32(midpoint) + 1), nearAbove],
        ];
        for (const [input, expected] of cases) {
          assert.ok(Object.is(round(input), expected), `${dtype} ${input} (between codes ${code} and ${code + 1}) → ${round(input)}, expected ${expected}`);
          assert.ok(Object.is(round(-input), -expected), `${dtype} ${-input} → ${round(-input)}, expected ${-expected}`);
          checked += 2;
        }
      }
      assert.equal(checked, infinityCode * 6);
    });

    test(`${dtype}: random float32 values round as IEEE round-to-nearest-even`, () => {
      const random = seededRandom(dtype === 'F16' ? 16 : 1616);
      for (let i = 0; i < 300_000; i++) {
        // Half the draws in the format's own range, half over every float32 exponent.
        let pattern = random.uint32();
        if (i % 2 === 0) {
          const exponent = dtype === 'F16' ? 95 + Math.floor(random.uniform() * 50) : Math.floor(random.uniform() * 255);
          pattern = (pattern & 0x807fffff) | (exponent << 23);
        }
        const value = float32FromBits(pattern);
        if (Number.isNaN(value)) continue;
        const expected = referenceRound(value, dtype);
        assert.ok(Object.is(round(value), expected), `${dtype} ${value} (0x${(pattern >>> 0).toString(16)}) → ${round(value)}, expected ${expected}`);
      }
    });
  }

  test('non-finite values pass through', () => {
    for (const round of [roundToHalf, roundToBfloat16]) {
      assert.equal(round(Infinity), Infinity);
      assert.equal(round(-Infinity), -Infinity);
      assert.ok(Number.isNaN(round(NaN)));
    }
  });
});

async function fingerprint(model: Model, options: { dtype?: Storage; prefix?: string } = {}): Promise<Fingerprint> {
  return fingerprintFile(writeModel(model, options));
}

/** Exact relative distance ‖a − b‖/‖b‖ over the named layers. */
function exactRelativeDistance(a: Model, b: Model, names: readonly string[]): number {
  let squared = 0;
  let reference = 0;
  for (const name of names) {
    const x = a.layers.get(name)!.values;
    const y = b.layers.get(name)!.values;
    for (let i = 0; i < x.length; i++) {
      squared += (x[i]! - y[i]!) ** 2;
      reference += y[i]! ** 2;
    }
  }
  return Math.sqrt(squared / reference);
}

const WEIGHT_NAMES = Object.keys(SHAPES).filter((name) => !BUFFERS.has(name));
const BODY_NAMES = WEIGHT_NAMES.filter((name) => !name.startsWith('head.'));

/**
 * Relative distances are estimated: fc1 (100 352 elements) is sampled, its ‖Δ‖² has a
 * standard error of about 4.5% (see fingerprint.test.ts), so the distance about 2.3%. 10% is
 * over four standard errors.
 */
const DISTANCE_TOLERANCE = 0.1;

// ---------------------------------------------------------------------------------------------
// compare
// ---------------------------------------------------------------------------------------------

describe('compareFingerprints', () => {
  const parent = randomModel(100);
  let parentPrint: Fingerprint;
  before(async () => {
    parentPrint = await fingerprint(parent);
  });

  test('unrelated models are unrelated, with a relatedness score near zero', async (t) => {
    const prints = [parentPrint, ...(await Promise.all([101, 102, 103, 104, 105].map((seed) => fingerprint(randomModel(seed)))))];
    const scores: number[] = [];
    for (let a = 0; a < prints.length; a++) {
      for (let b = 0; b < prints.length; b++) {
        if (a === b) continue;
        const comparison = compareFingerprints(prints[a]!, prints[b]!);
        assert.equal(comparison.related, false, `models ${a} and ${b}`);
        assert.equal(comparison.relativeDistance, Infinity);
        // About N(0, 1) for unrelated models: |Z| ≥ 4 has probability 6e-5.
        assert.ok(Math.abs(comparison.relatednessZ) < 4, `models ${a} and ${b}: Z = ${comparison.relatednessZ}`);
        assert.ok(comparison.relatedFraction < 0.1, `models ${a} and ${b}: related fraction ${comparison.relatedFraction}`);
        scores.push(comparison.relatednessZ);
      }
    }
    t.diagnostic(`Z of unrelated pairs: ${scores.map((z) => z.toFixed(2)).join(' ')}`);
  });

  test('a fine-tuned copy is related, with a large score and the right distance', async () => {
    const child = finetune(parent, 200);
    const comparison = compareFingerprints(await fingerprint(child), parentPrint);
    assert.equal(comparison.related, true);
    assert.ok(comparison.relatednessZ > 20, `Z = ${comparison.relatednessZ}`);
    assert.equal(comparison.relatedFraction, 1);
    assert.deepEqual(comparison.reinitialised, []);
    assert.deepEqual(comparison.reshaped, []);
    assert.deepEqual(comparison.layers.map((layer) => layer.name).sort(), [...WEIGHT_NAMES].sort());
    const exact = exactRelativeDistance(child, parent, WEIGHT_NAMES);
    assert.ok(Math.abs(comparison.relativeDistance - exact) <= DISTANCE_TOLERANCE * exact, `distance ${comparison.relativeDistance} vs exact ${exact}`);
  });

  test('a re-initialised head of the same shape is listed and left out of the distance', async () => {
    const child = finetune(parent, 201, { replace: { 'head.weight': undefined, 'head.bias': undefined } });
    const comparison = compareFingerprints(await fingerprint(child), parentPrint);
    assert.equal(comparison.related, true);
    assert.ok(comparison.reinitialised.includes('head.weight'), `reinitialised: ${comparison.reinitialised.join(', ')}`);
    assert.ok(!comparison.layers.some((layer) => layer.name === 'head.weight'));
    assert.ok(comparison.reinitialised.every((name) => name.startsWith('head.')));
    const body = exactRelativeDistance(child, parent, BODY_NAMES);
    const all = exactRelativeDistance(child, parent, WEIGHT_NAMES);
    assert.ok(all > 2 * body, 'the new head would dominate the distance');
    assert.ok(Math.abs(comparison.relativeDistance - body) <= DISTANCE_TOLERANCE * body, `distance ${comparison.relativeDistance} vs body ${body}, all ${all}`);
  });

  test('a head of another shape is listed as reshaped', async () => {
    const child = finetune(parent, 202, { replace: { 'head.weight': [5, 64], 'head.bias': [5] } });
    const comparison = compareFingerprints(await fingerprint(child), parentPrint);
    assert.equal(comparison.related, true);
    assert.deepEqual(comparison.reshaped, [
      { name: 'head.weight', shapeA: [5, 64], shapeB: [10, 64] },
      { name: 'head.bias', shapeA: [5], shapeB: [10] },
    ]);
    assert.ok(!comparison.layers.some((layer) => layer.name.startsWith('head.')));
    assert.ok(!comparison.reinitialised.some((name) => name.startsWith('head.')));
    const body = exactRelativeDistance(child, parent, BODY_NAMES);
    assert.ok(Math.abs(comparison.relativeDistance - body) <= DISTANCE_TOLERANCE * body);
  });

  test('batch-norm statistics and counters are not weights and change nothing', async () => {
    const child = finetune(parent, 203);
    const childPrint = await fingerprint(child);
    for (const tensor of childPrint.tensors) {
      const buffer = /running_(mean|var)|num_batches_tracked/.test(tensor.name);
      assert.equal(isWeight(tensor), !buffer, tensor.name);
    }
    const comparison = compareFingerprints(childPrint, parentPrint);
    const mentioned = [...comparison.layers.map((layer) => layer.name), ...comparison.reinitialised, ...comparison.reshaped.map((entry) => entry.name)];
    assert.deepEqual(mentioned.filter((name) => /running_|num_batches/.test(name)), []);
    // The same weights with the parent's statistics (and other shapes of them) compare identically.
    const sameStatistics: Model = {
      steps: parent.steps,
      layers: new Map([...child.layers].map(([name, layer]) => [name, BUFFERS.has(name) ? parent.layers.get(name)! : layer])),
    };
    const otherShapes: Model = {
      steps: 1,
      layers: new Map([...child.layers].map(([name, layer]) => [name, BUFFERS.has(name) ? { shape: [3], values: Float32Array.of(1, 2, 3) } : layer])),
    };
    for (const variant of [sameStatistics, otherShapes]) {
      const other = compareFingerprints(await fingerprint(variant), parentPrint);
      assert.deepEqual(other.reshaped, []);
      assert.deepEqual(other.reinitialised, comparison.reinitialised);
      assert.equal(other.relativeDistance, comparison.relativeDistance);
      assert.equal(other.relatednessZ, comparison.relatednessZ);
    }
  });

  test('a model that keeps only its head is not related', async () => {
    const stranger = randomModel(300);
    const child: Model = {
      steps: 0,
      layers: new Map([...stranger.layers].map(([name, layer]) => [name, name.startsWith('head.') ? parent.layers.get(name)! : layer])),
    };
    const comparison = compareFingerprints(await fingerprint(child), parentPrint);
    assert.equal(comparison.related, false);
    assert.ok(comparison.relatedFraction < 0.05);
    assert.ok(comparison.layers.some((layer) => layer.name === 'head.weight' && layer.identical));
  });

  test('a non-finite tensor that both models share does not hide their distance', async () => {
    // A causal-mask buffer of 0/−∞ under a name that is not a known buffer: identical in both,
    // its ‖b‖² is ∞, which must not turn every distance into 0.
    const mask = Float32Array.from({ length: 64 * 64 }, (_, i) => (i % 64 > Math.floor(i / 64) ? -Infinity : 0));
    const withMask = (model: Model): Model => ({ ...model, layers: new Map([...model.layers, ['attn.mask', { shape: [64, 64], values: mask }]]) });
    const child = finetune(parent, 204);
    const comparison = compareFingerprints(await fingerprint(withMask(child)), await fingerprint(withMask(parent)));
    assert.equal(comparison.related, true);
    const exact = exactRelativeDistance(child, parent, WEIGHT_NAMES);
    assert.ok(
      Math.abs(comparison.relativeDistance - exact) <= DISTANCE_TOLERANCE * exact,
      `distance ${comparison.relativeDistance} vs ${exact} over the finite weights`,
    );
  });

  test('wrapper prefixes and storage width do not matter', async () => {
    const comparison = compareFingerprints(await fingerprint(parent, { prefix: 'module.', dtype: 'F64' }), parentPrint);
    assert.equal(comparison.related, true);
    assert.equal(comparison.relativeDistance, 0);
    assert.ok(comparison.layers.every((layer) => layer.identical && layer.squaredDistance === 0 && layer.cosine === 1));
  });
});

// ---------------------------------------------------------------------------------------------
// derived copies
// ---------------------------------------------------------------------------------------------

describe('derivedCopy', () => {
  const source = randomModel(400);
  let sourcePrint: Fingerprint;
  before(async () => {
    sourcePrint = await fingerprint(source);
  });

  /** The verdict both ways round, checked for consistency; returns it as (copy, source). */
  function judge(copy: Fingerprint, original: Fingerprint) {
    const forward = derivedCopy(copy, original, compareFingerprints(copy, original));
    const backward = derivedCopy(original, copy, compareFingerprints(original, copy));
    assert.equal(forward?.relation, backward?.relation, 'the same relation whichever way round');
    if (forward && backward && forward.relation !== 'converted') assert.equal(forward.aIsSource, !backward.aIsSource);
    return forward;
  }

  for (const dtype of ['F16', 'BF16'] as const) {
    test(`a ${dtype} copy is typed fp16 with the float32 model as its source`, async () => {
      const copy = await fingerprint(source, { dtype });
      assert.ok(copy.tensors.filter(isWeight).every((tensor) => tensor.dtype === dtype));
      const verdict = judge(copy, sourcePrint);
      assert.equal(verdict?.relation, 'fp16');
      assert.equal(verdict.aIsSource, false);
      assert.match(verdict.evidence, new RegExp(dtype));
    });
  }

  test('a magnitude-pruned copy is typed pruned with the dense model as its source', async () => {
    const copy = await fingerprint(pruned(source, 0.3));
    const verdict = judge(copy, sourcePrint);
    assert.equal(verdict?.relation, 'pruned');
    assert.equal(verdict.aIsSource, false);
  });

  test('identical weights in another container are typed converted', async () => {
    const verdict = judge(await fingerprint(source, { dtype: 'F64', prefix: 'model.' }), sourcePrint);
    assert.equal(verdict?.relation, 'converted');
  });

  test('fine-tunes are none of these, whatever their storage', async () => {
    const child = finetune(source, 401);
    assert.equal(judge(await fingerprint(child), sourcePrint), undefined, 'float32 fine-tune');
    assert.equal(judge(await fingerprint(child, { dtype: 'F16' }), sourcePrint), undefined, 'fine-tune saved as float16');
    assert.equal(judge(await fingerprint(pruned(child, 0.3)), sourcePrint), undefined, 'fine-tune, then pruned');
    // Frozen feature extractor, new head: many equal values, but trained weights too.
    const frozen = finetune(source, 402, { frozen: (name) => !name.startsWith('head.') });
    assert.equal(judge(await fingerprint(frozen), sourcePrint), undefined, 'frozen fine-tune');
    // Most sampled values (fc1, frozen) equal the source rounded to float16, but not all.
    const firstLayerFrozen = finetune(source, 404, { frozen: (name) => name.startsWith('fc1.') });
    assert.equal(judge(await fingerprint(firstLayerFrozen, { dtype: 'F16' }), sourcePrint), undefined, 'fine-tune with fc1 frozen, saved as float16');
    assert.equal(judge(await fingerprint(randomModel(403)), sourcePrint), undefined, 'unrelated model');
  });
});

// ---------------------------------------------------------------------------------------------
// parent
// ---------------------------------------------------------------------------------------------

describe('rankParents', () => {
  const grandparent = randomModel(500);
  const parent = finetune(grandparent, 501);
  const unrelated = [randomModel(502), randomModel(503)];
  /** Rows 0..39 of fc1 (31% of the weights): the child keeps the parent's values there. */
  const frozen = (name: string, index: number) => name === 'fc1.weight' && index < 40 * 784;

  /**
   * The child moves by u from the parent; the sibling by 0.8·u plus its own smaller noise ε, so
   * it lies nearer the child than the parent does (‖0.2u − ε‖ < ‖u‖). Only elements the child
   * never trained, equal in child and parent and changed in the sibling, tell them apart.
   */
  function family(withFrozenBlock: boolean) {
    const update = finetune(parent, 510, { relative: 0.05 });
    const noise = finetune(parent, 511, { relative: 0.02 });
    const keep = (name: string, index: number) => withFrozenBlock && frozen(name, index);
    const child = mapWeights(parent, (name, values) => values.map((value, i) => (keep(name, i) ? value : update.layers.get(name)!.values[i]!)));
    const sibling = mapWeights(parent, (name, values) =>
      values.map((value, i) => value + 0.8 * (update.layers.get(name)!.values[i]! - value) + (noise.layers.get(name)!.values[i]! - value)),
    );
    return { child, sibling };
  }

  let prints: { grandparent: Fingerprint; parent: Fingerprint; unrelated: Fingerprint[] };
  before(async () => {
    prints = {
      grandparent: await fingerprint(grandparent),
      parent: await fingerprint(parent),
      unrelated: await Promise.all(unrelated.map((model) => fingerprint(model))),
    };
  });

  test('values inherited exactly pick the parent over a sibling nearer in L2', async () => {
    const { child, sibling } = family(true);
    const childPrint = await fingerprint(child);
    const siblingPrint = await fingerprint(sibling);
    const toSibling = compareFingerprints(childPrint, siblingPrint);
    const toParent = compareFingerprints(childPrint, prints.parent);
    assert.ok(toSibling.related && toParent.related);
    assert.ok(toSibling.relativeDistance < toParent.relativeDistance, `sibling ${toSibling.relativeDistance} is nearer than parent ${toParent.relativeDistance}`);
    const candidates = [siblingPrint, prints.unrelated[0]!, prints.grandparent, prints.parent, prints.unrelated[1]!];
    const answer = rankParents(childPrint, candidates);
    assert.equal(answer.parent?.fingerprint, prints.parent);
    assert.equal(answer.ranking[0]?.fingerprint, prints.parent);
    assert.equal(answer.ranking[1]?.fingerprint, siblingPrint);
  });

  test('without such values the nearer sibling wins (control for the test above)', async () => {
    const { child, sibling } = family(false);
    const siblingPrint = await fingerprint(sibling);
    const answer = rankParents(await fingerprint(child), [prints.parent, siblingPrint, prints.grandparent]);
    assert.equal(answer.parent?.fingerprint, siblingPrint);
  });

  test('probabilities: zero for unrelated candidates, one in total over related ones', async () => {
    const child = await fingerprint(finetune(parent, 520));
    const candidates = [prints.unrelated[0]!, prints.grandparent, prints.parent, prints.unrelated[1]!];
    const answer = rankParents(child, candidates);
    assert.equal(answer.parent?.fingerprint, prints.parent);
    assert.equal(answer.ranking.length, candidates.length);
    let total = 0;
    for (const entry of answer.ranking) {
      const related = entry.fingerprint !== prints.unrelated[0] && entry.fingerprint !== prints.unrelated[1];
      assert.equal(entry.comparison.related, related);
      if (related) assert.ok(entry.probability > 0);
      else assert.equal(entry.probability, 0);
      total += entry.probability;
    }
    assert.ok(Math.abs(total - 1) < 1e-12, `total probability ${total}`);
    assert.ok(answer.parent!.probability > 0.5);
    for (let i = 1; i < answer.ranking.length; i++) assert.ok(answer.ranking[i - 1]!.score >= answer.ranking[i]!.score, 'ranked by score');
  });

  test('no parent when no candidate is related', async () => {
    const child = await fingerprint(finetune(parent, 530));
    const answer = rankParents(child, prints.unrelated);
    assert.equal(answer.parent, undefined);
    assert.equal(answer.ranking.length, 2);
    assert.ok(answer.ranking.every((entry) => entry.probability === 0 && !entry.comparison.related));
    assert.equal(rankParents(child, []).parent, undefined);
  });
});

// ---------------------------------------------------------------------------------------------
// trees
// ---------------------------------------------------------------------------------------------

function treeOf(members: readonly Fingerprint[]) {
  const cache = new Map<string, Comparison>();
  return familyTree(members, (a, b) => {
    const key = `${a},${b}`;
    let comparison = cache.get(key);
    if (!comparison) cache.set(key, (comparison = compareFingerprints(members[a]!, members[b]!)));
    return comparison;
  });
}

function undirectedEdges(parents: readonly number[]): string[] {
  return parents.flatMap((parent, child) => (parent < 0 ? [] : [[parent, child].sort().join('-')])).sort();
}

describe('familyTree', () => {
  test('a star hangs from its centre', async () => {
    const root = randomModel(600);
    // Children listed first, the root last, so that index order gives nothing away.
    const members = [
      ...(await Promise.all([0.03, 0.05, 0.08, 0.12, 0.04].map((relative, k) => fingerprint(finetune(root, 601 + k, { relative }))))),
      await fingerprint(root),
    ];
    const tree = treeOf(members);
    assert.equal(tree.root, 5);
    assert.deepEqual(tree.parents, [5, 5, 5, 5, 5, -1]);
    assert.equal(tree.confidence.length, members.length);
    for (const confidence of tree.confidence) assert.ok(confidence >= 0 && confidence <= 1);
    assert.ok(tree.confidence.slice(0, 5).every((confidence) => confidence === 1), `confidence ${tree.confidence.join(', ')}`);
  });

  test('a chain is recovered as a path', async () => {
    // a → b → c → d → e, each a 5% fine-tune of the one before, shuffled.
    const chain = [randomModel(700)];
    for (let k = 1; k < 5; k++) chain.push(finetune(chain[k - 1]!, 700 + k));
    const order = [3, 0, 4, 1, 2];
    const members = await Promise.all(order.map((k) => fingerprint(chain[k]!)));
    const tree = treeOf(members);
    const position = (k: number) => order.indexOf(k);
    const expected = [0, 1, 2, 3].map((k) => [position(k), position(k + 1)].sort().join('-')).sort();
    assert.deepEqual(undirectedEdges(tree.parents), expected);
    assert.equal(tree.parents.filter((parent) => parent < 0).length, 1);
    assert.equal(tree.parents[tree.root], -1);
  });

  test('one member is its own root', async () => {
    assert.deepEqual(treeOf([await fingerprint(randomModel(800))]), { root: 0, parents: [-1], confidence: [1] });
  });
});

// ---------------------------------------------------------------------------------------------
// scan
// ---------------------------------------------------------------------------------------------

describe('scanFolder and lineageOf', () => {
  test('finds checkpoints, groups families and types edges', async () => {
    const folder = path.join(temp.dir, 'workspace');
    const base = randomModel(900);
    const child = finetune(base, 901);
    const grandchild = finetune(child, 902, { replace: { 'head.weight': [5, 64], 'head.bias': [5] } });
    writeModel(base, { file: path.join(folder, 'base', 'model.safetensors') });
    writeModel(child, { file: path.join(folder, 'runs', 'a', 'model.safetensors'), prefix: 'module.' });
    writeModel(grandchild, { file: path.join(folder, 'runs', 'a', 'b', 'model.safetensors') });
    writeModel(finetune(base, 904), { file: path.join(folder, 'runs', 'c', 'model.pt.safetensors') });
    writeModel(finetune(base, 905, { relative: 0.08 }), { file: path.join(folder, 'runs', 'd', 'model.safetensors'), prefix: 'model.' });
    writeModel(child, { file: path.join(folder, 'export', 'model-fp16.safetensors'), dtype: 'F16' });
    writeModel(randomModel(903), { file: path.join(folder, 'other', 'model.safetensors') });
    // Sharded: only the index counts, and it holds the same weights as the base.
    const names = [...base.layers.keys()];
    const half = names.slice(0, 5);
    const shard = (keys: readonly string[]): Model => ({ steps: base.steps, layers: new Map(keys.map((name) => [name, base.layers.get(name)!])) });
    writeModel(shard(half), { file: path.join(folder, 'sharded', 'model-00001-of-00002.safetensors') });
    writeFileSync(
      path.join(folder, 'sharded', 'model-00002-of-00002.safetensors'),
      encodeSafetensors(names.filter((name) => !half.includes(name)).map((name) => {
        const layer = base.layers.get(name)!;
        return { name, dtype: 'F32', shape: layer.shape, data: encodeValues(layer.values, 'F32') };
      })),
    );
    const weightMap: Record<string, string> = {};
    for (const name of names) weightMap[name] = half.includes(name) ? 'model-00001-of-00002.safetensors' : 'model-00002-of-00002.safetensors';
    weightMap['bn.num_batches_tracked'] = 'model-00001-of-00002.safetensors';
    writeFileSync(path.join(folder, 'sharded', 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    // Skipped folders, a broken checkpoint and a file that is not one.
    writeModel(base, { file: path.join(folder, 'node_modules', 'x', 'model.safetensors') });
    writeModel(base, { file: path.join(folder, '.hidden', 'model.safetensors') });
    writeFileSync(path.join(folder, 'broken.safetensors'), Buffer.from('not a checkpoint at all'));
    writeFileSync(path.join(folder, 'notes.txt'), 'hello');

    const found = (await findCheckpoints(folder)).map((file) => path.relative(folder, file));
    assert.deepEqual(found.sort(), [
      'base/model.safetensors',
      'broken.safetensors',
      'export/model-fp16.safetensors',
      'other/model.safetensors',
      'runs/a/b/model.safetensors',
      'runs/a/model.safetensors',
      'runs/c/model.pt.safetensors',
      'runs/d/model.safetensors',
      'sharded/model.safetensors.index.json',
    ]);

    const cache = new FingerprintCache(path.join(temp.dir, 'scan-cache'));
    const progress: string[] = [];
    const result = await scanFolder(folder, { cache, onProgress: (_done, _total, file) => progress.push(file) });
    assert.equal(progress.length, found.length);
    const broken = result.checkpoints.find((checkpoint) => checkpoint.path === 'broken.safetensors');
    assert.ok(broken?.error, 'the broken file is reported');
    assert.deepEqual(result.checkpoints.filter((checkpoint) => checkpoint.error).map((checkpoint) => checkpoint.path), ['broken.safetensors']);

    const edges = result.edges.map((edge) => `${edge.parent} -> ${edge.child} (${edge.relation})`).sort();
    // The base and its sharded copy hold identical weights: either may be the source.
    const converted = result.edges.find((edge) => edge.relation === 'converted');
    assert.ok(converted, `a converted edge in ${edges.join('; ')}`);
    const baseName = converted.parent;
    assert.deepEqual([converted.parent, converted.child].sort(), ['base/model.safetensors', 'sharded/model.safetensors.index.json']);
    const children = ['runs/a/model.safetensors', 'runs/c/model.pt.safetensors', 'runs/d/model.safetensors'];
    assert.deepEqual(
      edges,
      [
        `${baseName} -> ${converted.child} (converted)`,
        'runs/a/model.safetensors -> export/model-fp16.safetensors (fp16)',
        ...children.map((name) => `${baseName} -> ${name} (finetune)`),
        'runs/a/model.safetensors -> runs/a/b/model.safetensors (finetune)',
      ].sort(),
    );
    const families = result.families.map((members) => [...members].sort()).sort((a, b) => b.length - a.length);
    assert.deepEqual(families, [
      [
        'base/model.safetensors',
        'export/model-fp16.safetensors',
        'runs/a/b/model.safetensors',
        'runs/a/model.safetensors',
        'runs/c/model.pt.safetensors',
        'runs/d/model.safetensors',
        'sharded/model.safetensors.index.json',
      ],
      ['other/model.safetensors'],
    ]);
    const headReplaced = result.edges.find((edge) => edge.child === 'runs/a/b/model.safetensors')!;
    assert.match(headReplaced.evidence, /head\.weight/, 'the replaced head is named in the evidence');

    // A second scan is served from the cache and gives the same answer.
    const computed = cache.computed;
    assert.deepEqual(await scanFolder(folder, { cache }), result);
    assert.equal(cache.computed, computed);
  });

  test('lineageOf stops on a cancelled signal, and has nothing to say about no checkpoints', async () => {
    const print = await fingerprint(randomModel(950));
    assert.throws(() => lineageOf([print, { ...print, path: 'copy' }], { signal: AbortSignal.abort() }), /cancelled/);
    const empty = lineageOf([]);
    assert.deepEqual([empty.edges, empty.families], [[], []]);
  });
});
