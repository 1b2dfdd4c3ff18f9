import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CancelledError, FileChangedError } from '../../server/src/engine/errors';
import { deserialise, FingerprintCache, serialise } from '../../server/src/engine/fingerprint/cache';
import { mix32, SAMPLE_SEED } from '../../server/src/engine/fingerprint/elementHash';
import {
  FINGERPRINT_VERSION,
  fingerprintFile,
  fingerprintTensor,
  SAMPLES_PER_TENSOR,
  SKETCH_BUCKETS,
  type Fingerprint,
  type TensorFingerprint,
} from '../../server/src/engine/fingerprint/fingerprint';
import { normalisedNames } from '../../server/src/engine/fingerprint/tensorNames';
import type { DType } from '../../server/src/engine/formats/dtype';
import type { Tensor } from '../../server/src/engine/formats/tensor';
import { estimateSquaredDistance } from '../../server/src/engine/lineage/compare';
import { makeTempDir } from '../helpers';
import { seededRandom, type Random } from './random';
import { encodeSafetensors, type TensorSpec } from './safetensorsWriter';

let temp: { dir: string; cleanup: () => void };
before(() => {
  temp = makeTempDir('fingerprint-test-');
});
after(() => temp.cleanup());

interface ModelTensor {
  readonly name: string;
  readonly values: Float32Array | Float64Array;
  readonly shape?: readonly number[];
}

function specOf(tensor: ModelTensor): TensorSpec {
  const { values } = tensor;
  return {
    name: tensor.name,
    dtype: values instanceof Float64Array ? 'F64' : 'F32',
    shape: tensor.shape ?? [values.length],
    data: Buffer.from(values.buffer, values.byteOffset, values.byteLength),
  };
}

let fileCounter = 0;
function writeModel(tensors: readonly ModelTensor[], name = `model${++fileCounter}.safetensors`): string {
  const file = path.join(temp.dir, name);
  writeFileSync(file, encodeSafetensors(tensors.map(specOf)));
  return file;
}

function tensorOf(fingerprint: Fingerprint, name: string): TensorFingerprint {
  const tensor = fingerprint.tensors.find((candidate) => candidate.name === name);
  assert.ok(tensor, `fingerprint has tensor ${name}`);
  return tensor;
}

/** ‖a − b‖² of the stored (float32) values, summed in element order. */
function exactSquaredDistance(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += (a[i]! - b[i]!) ** 2;
  return sum;
}

/** A tensor held in memory that streams in chunks of `chunk` elements, for fingerprintTensor. */
function memoryTensor(name: string, values: Float64Array, chunk: number, dtype: DType = 'F64'): Tensor {
  return {
    name,
    dtype,
    shape: [values.length],
    elementCount: values.length,
    byteSize: values.length * 8,
    read: async (start = 0, count = values.length - start) => values.slice(start, start + count),
    async *chunks() {
      for (let start = 0; start < values.length; start += chunk) yield values.slice(start, start + chunk);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Distance estimates from sketches and samples
// ---------------------------------------------------------------------------------------------

/**
 * Predicted standard deviations of the two halves of estimateSquaredDistance for a difference
 * vector d (n elements, each sampled with probability p, B count-sketch buckets):
 *   sample:  Σ_sampled d²/p          Var = (1−p)/p · Σ d⁴
 *   sketch:  Σ_buckets (Σ ±d)²       Var = 2/B · ((Σ d²)² − Σ d⁴)
 * and of their inverse-variance weighted combination, 1/Var = 1/Var_sample + 1/Var_sketch. For
 * a dense Gaussian difference of 200 000 elements (p = 0.082) that is 1.4% for the sample,
 * 8.8% for the sketch and 1.4% combined.
 */
function predictedErrors(a: ArrayLike<number>, b: ArrayLike<number>, rate: number) {
  let squares = 0;
  let fourth = 0;
  for (let i = 0; i < a.length; i++) {
    const d2 = (a[i]! - b[i]!) ** 2;
    squares += d2;
    fourth += d2 * d2;
  }
  const sample = Math.sqrt(((1 - rate) / rate) * fourth);
  const sketch = Math.sqrt((2 / SKETCH_BUCKETS) * (squares * squares - fourth));
  return { exact: squares, sample, sketch, combined: 1 / Math.sqrt(1 / (sample * sample) + 1 / (sketch * sketch)) };
}

/** Scaled by the fraction actually sampled, which removes the bias of a fixed position set. */
function sampleEstimate(a: TensorFingerprint, b: TensorFingerprint): number {
  return exactSquaredDistance(a.sample, b.sample) / (a.sample.length / a.count);
}

function sketchEstimate(a: TensorFingerprint, b: TensorFingerprint): number {
  return exactSquaredDistance(a.sketch, b.sketch);
}

/** Errors beyond this many predicted standard deviations fail (two-sided p ≈ 6e-5 each). */
const SIGMAS = 4;
/** Relative error allowed for the combined estimate on dense differences: about 4 × 1.4%. */
const DENSE_RELATIVE_TOLERANCE = 0.06;

describe('distance estimates', () => {
  const rows = 400;
  const columns = 500;
  const n = rows * columns;
  const random = seededRandom(20240601);

  /** Parent/child pairs of 200 000-element float32 tensors, with how the child differs. */
  const cases: { name: string; dense: boolean; parent: Float32Array; child: Float32Array }[] = [];
  const parentLike = () => random.normals(n, 0.02);
  {
    const parent = parentLike();
    cases.push({ name: 'small dense update', dense: true, parent, child: parent.map((x) => x + random.normal(0, 0.001)) });
  }
  {
    const parent = parentLike();
    cases.push({ name: 'larger dense update', dense: true, parent, child: parent.map((x) => x + random.normal(0, 0.006)) });
  }
  {
    // Per-row learning rates spread over two decades, as in real layers.
    const parent = parentLike();
    const scales = Array.from({ length: rows }, () => 10 ** (-4 + 2 * random.uniform()));
    cases.push({ name: 'row-scaled update', dense: true, parent, child: parent.map((x, i) => x + random.normal(0, scales[Math.floor(i / columns)]!)) });
  }
  {
    // An update with a common offset (a shifted bias or norm scale): the sketch's random signs
    // must cancel the offset's cross terms.
    const parent = parentLike();
    cases.push({ name: 'shifted update', dense: true, parent, child: parent.map((x) => x + 0.004 + random.normal(0, 0.001)) });
  }
  {
    // Only the first 5% of rows trained: a sparse, heavy-tailed difference.
    const parent = parentLike();
    cases.push({ name: 'one block updated', dense: false, parent, child: parent.map((x, i) => (i < n / 20 ? x + random.normal(0, 0.01) : x)) });
  }
  {
    // 30% smallest magnitudes set to zero: the difference is the small values themselves.
    const parent = parentLike();
    const cut = [...parent].map(Math.abs).sort((x, y) => x - y)[Math.floor(0.3 * n)]!;
    cases.push({ name: 'magnitude-pruned', dense: true, parent, child: parent.map((x) => (Math.abs(x) < cut ? 0 : x)) });
  }
  cases.push({ name: 'unrelated', dense: true, parent: parentLike(), child: parentLike() });

  let parentPrint: Fingerprint;
  let childPrint: Fingerprint;
  before(async () => {
    const shape = [rows, columns];
    parentPrint = await fingerprintFile(writeModel(cases.map((c) => ({ name: c.name, values: c.parent, shape }))));
    childPrint = await fingerprintFile(writeModel(cases.map((c) => ({ name: c.name, values: c.child, shape }))));
  });

  test('sample and sketch estimates of ‖a−b‖² agree with the exact value within their predicted error', (t) => {
    for (const c of cases) {
      const a = tensorOf(childPrint, c.name);
      const b = tensorOf(parentPrint, c.name);
      assert.equal(a.sampleRate, SAMPLES_PER_TENSOR / n);
      assert.equal(a.sketch.length, SKETCH_BUCKETS);
      const predicted = predictedErrors(c.child, c.parent, a.sampleRate);
      const fromSample = sampleEstimate(a, b);
      const fromSketch = sketchEstimate(a, b);
      const combined = estimateSquaredDistance(a, b);
      const relative = (value: number) => (value - predicted.exact) / predicted.exact;
      t.diagnostic(
        `${c.name}: sample ${(100 * relative(fromSample)).toFixed(2)}% (σ ${(100 * predicted.sample / predicted.exact).toFixed(2)}%), ` +
          `sketch ${(100 * relative(fromSketch)).toFixed(2)}% (σ ${(100 * predicted.sketch / predicted.exact).toFixed(2)}%), ` +
          `combined ${(100 * relative(combined)).toFixed(2)}% (σ ${(100 * predicted.combined / predicted.exact).toFixed(2)}%)`,
      );
      assert.ok(Math.abs(fromSample - predicted.exact) <= SIGMAS * predicted.sample, `${c.name}: sample estimate ${fromSample} vs exact ${predicted.exact}`);
      assert.ok(Math.abs(fromSketch - predicted.exact) <= SIGMAS * predicted.sketch, `${c.name}: sketch estimate ${fromSketch} vs exact ${predicted.exact}`);
      assert.ok(Math.abs(combined - predicted.exact) <= SIGMAS * predicted.combined, `${c.name}: combined estimate ${combined} vs exact ${predicted.exact}`);
      const [low, high] = [Math.min(fromSample, fromSketch), Math.max(fromSample, fromSketch)];
      assert.ok(combined >= low - 1e-9 * predicted.exact && combined <= high + 1e-9 * predicted.exact, `${c.name}: the combination lies between its two parts`);
      if (c.dense) assert.ok(Math.abs(relative(combined)) <= DENSE_RELATIVE_TOLERANCE, `${c.name}: ${relative(combined)} relative error`);
    }
  });

  test('the sketch estimate is unbiased and its spread is as predicted over many independent pairs', async (t) => {
    // 120 independent pairs of 20 000 elements. Standardised errors z = (estimate − exact)/σ
    // should have mean ≈ 0 (|mean| ≤ 4/√120 = 0.37) and mean square ≈ 1 (χ²₁₂₀/120 has
    // standard deviation 0.13: [0.5, 1.6] is about four of them either side). Half as many
    // buckets as claimed would double the mean square. (The sample half is left out: every
    // tensor of one size is sampled at the same positions, so its errors are not independent
    // across pairs of equal size.)
    const local = seededRandom(77);
    const pairs = 120;
    const size = 20_000;
    const sketchZ: number[] = [];
    const combinedZ: number[] = [];
    for (let pair = 0; pair < pairs; pair++) {
      const parent = local.normals(size, 0.05);
      const child = parent.map((x) => x + local.normal(0, 0.002));
      const a = await fingerprintTensor(memoryTensor('w', Float64Array.from(child), 1 << 20, 'F32'), 'w');
      const b = await fingerprintTensor(memoryTensor('w', Float64Array.from(parent), 1 << 20, 'F32'), 'w');
      const predicted = predictedErrors(child, parent, a.sampleRate);
      sketchZ.push((sketchEstimate(a, b) - predicted.exact) / predicted.sketch);
      combinedZ.push((estimateSquaredDistance(a, b) - predicted.exact) / predicted.combined);
    }
    for (const [what, zs] of [['sketch', sketchZ], ['combined', combinedZ]] as const) {
      const mean = zs.reduce((sum, z) => sum + z, 0) / pairs;
      const meanSquare = zs.reduce((sum, z) => sum + z * z, 0) / pairs;
      t.diagnostic(`${what}: standardised errors over ${pairs} pairs: mean ${mean.toFixed(3)}, mean square ${meanSquare.toFixed(3)}`);
      assert.ok(Math.abs(mean) <= 4 / Math.sqrt(pairs), `${what}: mean standardised error ${mean}`);
      assert.ok(meanSquare <= 1.6, `${what}: mean square standardised error ${meanSquare}`);
      // The sketch's errors are independent across pairs, so their spread must match the prediction.
      if (what === 'sketch') assert.ok(meanSquare >= 0.5, `${what}: mean square standardised error ${meanSquare}`);
    }
  });

  test('tensors of at most SAMPLES_PER_TENSOR elements are held exactly', async () => {
    const local = seededRandom(5);
    for (const size of [1, 7, SKETCH_BUCKETS, SKETCH_BUCKETS + 1, 5000, SAMPLES_PER_TENSOR]) {
      const parent = local.normals(size, 0.1);
      const child = parent.map((x) => x + local.normal(0, 0.01));
      const a = tensorOf(await fingerprintFile(writeModel([{ name: 'w', values: child }])), 'w');
      const b = tensorOf(await fingerprintFile(writeModel([{ name: 'w', values: parent }])), 'w');
      assert.equal(a.sampleRate, 1, `size ${size}`);
      assert.deepEqual(a.sample, child, `size ${size}: the sample is the whole tensor`);
      assert.equal(estimateSquaredDistance(a, b), exactSquaredDistance(child, parent), `size ${size}`);
      if (size <= SKETCH_BUCKETS) {
        assert.deepEqual(a.sketch, Float64Array.from(child), `size ${size}: the sketch holds the values`);
      } else {
        assert.equal(a.sketch.length, SKETCH_BUCKETS, `size ${size}`);
      }
    }
  });

  test('one element more than SAMPLES_PER_TENSOR is sampled', async () => {
    const values = seededRandom(6).normals(SAMPLES_PER_TENSOR + 1);
    const print = tensorOf(await fingerprintFile(writeModel([{ name: 'w', values }])), 'w');
    assert.ok(print.sampleRate < 1);
    assert.ok(print.sample.length < values.length);
  });
});

describe('sample positions', () => {
  test('are the indices whose mix32(index, SAMPLE_SEED) falls below rate·2^32, the same in every file', async () => {
    const n = 150_000;
    const random = seededRandom(11);
    const a = random.normals(n, 0.05);
    const b = a.map((x) => x + random.normal(0, 0.01));
    const difference = Float64Array.from(a, (x, i) => x - b[i]!);
    const [printA, printB, printD] = await Promise.all(
      [a, b, difference].map(async (values) => tensorOf(await fingerprintFile(writeModel([{ name: 'w', values, shape: [300, 500] }])), 'w')),
    );
    const rate = SAMPLES_PER_TENSOR / n;
    const expected: number[] = [];
    for (let i = 0; i < n; i++) if (mix32(i, SAMPLE_SEED) < rate * 4294967296) expected.push(a[i]!);
    assert.deepEqual(printA!.sample, Float32Array.from(expected));
    // About SAMPLES_PER_TENSOR are kept: binomial, standard deviation √(n·p·(1−p)) ≈ 120.
    assert.ok(Math.abs(printA!.sample.length - SAMPLES_PER_TENSOR) < 4 * Math.sqrt(n * rate * (1 - rate)));
    assert.equal(printB!.sample.length, printA!.sample.length);
    assert.equal(printD!.sample.length, printA!.sample.length);
    assert.equal(printD!.dtype, 'F64');
    // Linearity: sample(a) − sample(b) = sample(a − b), sketch(a) − sketch(b) = sketch(a − b).
    for (let i = 0; i < printA!.sample.length; i++) {
      assert.equal(Math.fround(printA!.sample[i]! - printB!.sample[i]!), printD!.sample[i]!, `sample element ${i}`);
    }
    for (let i = 0; i < SKETCH_BUCKETS; i++) {
      assert.ok(Math.abs(printA!.sketch[i]! - printB!.sketch[i]! - printD!.sketch[i]!) < 1e-9, `sketch bucket ${i}`);
      // About n/B = 590 values fall in each bucket: none is empty.
      assert.notEqual(printA!.sketch[i], 0, `sketch bucket ${i} is used`);
    }
  });

  test('fingerprints do not depend on how the values are chunked', async () => {
    const values = Float64Array.from(seededRandom(12).normals(40_000, 1, 3));
    const whole = await fingerprintTensor(memoryTensor('w', values, values.length), 'w');
    for (const chunk of [1, 7, 4096, 39_999]) {
      assert.deepEqual(await fingerprintTensor(memoryTensor('w', values, chunk), 'w'), whole, `chunks of ${chunk}`);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Moments and hashes
// ---------------------------------------------------------------------------------------------

function directMoments(values: ArrayLike<number>) {
  const count = values.length;
  let sum = 0;
  let sumSquares = 0;
  let maxAbs = 0;
  let zeros = 0;
  for (let i = 0; i < count; i++) {
    const x = values[i]!;
    sum += x;
    sumSquares += x * x;
    maxAbs = Math.max(maxAbs, Math.abs(x));
    if (x === 0) zeros++;
  }
  const mean = sum / count;
  let m2 = 0;
  let m4 = 0;
  for (let i = 0; i < count; i++) {
    const d = values[i]! - mean;
    m2 += d * d;
    m4 += d ** 4;
  }
  const variance = m2 / count;
  return { count, mean, variance, kurtosis: variance > 0 ? m4 / count / variance ** 2 : 0, maxAbs, norm: Math.sqrt(sumSquares), zeros };
}

function assertClose(actual: number, expected: number, relative: number, absolute: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= relative * Math.abs(expected) + absolute, `${what}: ${actual} vs ${expected}`);
}

function float64Values(random: Random, count: number): Float64Array {
  // Values not representable in float32: moments are taken of the stored float64 values.
  return Float64Array.from({ length: count }, () => random.normal(-0.3, 0.7));
}

describe('moments', () => {
  const random = seededRandom(3);
  const gaussian = random.normals(30_000, 0.3, 0.1);
  for (let i = 0; i < gaussian.length; i += 97) gaussian[i] = 0;
  const heavy = Float32Array.from({ length: 20_000 }, () => random.normal() / Math.sqrt(random.uniform() + 0.01));
  const tensors: ModelTensor[] = [
    { name: 'gaussian', values: gaussian, shape: [300, 100] },
    // A large offset and a small spread: the shifted accumulation must not lose the variance.
    { name: 'offset', values: random.normals(5000, 0.01, 1000) },
    { name: 'heavy', values: heavy },
    { name: 'constant', values: new Float32Array(300).fill(2.5) },
    { name: 'all zeros', values: new Float32Array(1000) },
    { name: 'tiny', values: Float32Array.of(-3, 0.5, 4) },
    { name: 'float64', values: float64Values(random, 2000), shape: [2, 1000] },
    { name: 'empty', values: new Float32Array(0), shape: [0, 4] },
  ];

  test('count, mean, variance, kurtosis, maxAbs, norm and zeros match direct computation', async () => {
    const print = await fingerprintFile(writeModel(tensors));
    assert.equal(print.version, FINGERPRINT_VERSION);
    assert.equal(print.format, 'safetensors');
    assert.equal(print.parameterCount, tensors.reduce((sum, tensor) => sum + tensor.values.length, 0));
    for (const tensor of tensors) {
      const fingerprint = tensorOf(print, tensor.name);
      assert.deepEqual(fingerprint.shape, tensor.shape ?? [tensor.values.length]);
      assert.equal(fingerprint.count, tensor.values.length, tensor.name);
      if (tensor.values.length === 0) {
        assert.deepEqual([fingerprint.mean, fingerprint.variance, fingerprint.kurtosis, fingerprint.norm, fingerprint.zeros], [0, 0, 0, 0, 0]);
        assert.equal(fingerprint.sample.length, 0);
        continue;
      }
      const expected = directMoments(tensor.values);
      const spread = Math.sqrt(expected.variance);
      assertClose(fingerprint.mean, expected.mean, 1e-12, 1e-12 * spread, `${tensor.name} mean`);
      assertClose(fingerprint.variance, expected.variance, 1e-9, 1e-15, `${tensor.name} variance`);
      assertClose(fingerprint.kurtosis, expected.kurtosis, 1e-7, 0, `${tensor.name} kurtosis`);
      assert.equal(fingerprint.maxAbs, expected.maxAbs, `${tensor.name} maxAbs`);
      assertClose(fingerprint.norm, expected.norm, 1e-12, 0, `${tensor.name} norm`);
      assert.equal(fingerprint.zeros, expected.zeros, `${tensor.name} zeros`);
    }
    // Sanity of the cases themselves: a Gaussian has kurtosis 3, the heavy one much more.
    assertClose(tensorOf(print, 'gaussian').kurtosis, 3, 0.1, 0, 'gaussian kurtosis ≈ 3');
    assert.ok(tensorOf(print, 'heavy').kurtosis > 10);
    assert.equal(tensorOf(print, 'gaussian').zeros, Math.ceil(30_000 / 97));
    assert.equal(tensorOf(print, 'constant').variance, 0);
  });
});

describe('hashes', () => {
  const random = seededRandom(4);
  const values = random.normals(70_000, 0.05);

  test('hash the values as little-endian float32, whatever the storage and file', async () => {
    const expected = createHash('sha256').update(Buffer.from(values.buffer, values.byteOffset, values.byteLength)).digest('hex');
    const one = tensorOf(await fingerprintFile(writeModel([{ name: 'w', values }])), 'w');
    const two = tensorOf(await fingerprintFile(writeModel([{ name: 'other', values: random.normals(10) }, { name: 'w', values }])), 'w');
    const wide = tensorOf(await fingerprintFile(writeModel([{ name: 'w', values: Float64Array.from(values) }])), 'w');
    assert.equal(one.hash, expected);
    assert.equal(two.hash, expected);
    assert.equal(wide.dtype, 'F64');
    assert.equal(wide.hash, expected, 'a float64 copy of float32 values hashes equal');
  });

  test('one changed element changes the hash', async () => {
    const base = tensorOf(await fingerprintFile(writeModel([{ name: 'w', values }])), 'w');
    for (const index of [0, 12_345, values.length - 1]) {
      const changed = Float32Array.from(values);
      // The next float32 up: the smallest possible change.
      const bits = new Uint32Array(changed.buffer);
      bits[index] = bits[index]! + 1;
      assert.notEqual(changed[index], values[index]);
      const print = tensorOf(await fingerprintFile(writeModel([{ name: 'w', values: changed }])), 'w');
      assert.notEqual(print.hash, base.hash, `element ${index}`);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

describe('normalisedNames', () => {
  test('removes wrapper prefixes that every name carries', () => {
    assert.deepEqual(normalisedNames(['module.fc.weight', 'module.fc.bias']), ['fc.weight', 'fc.bias']);
    assert.deepEqual(normalisedNames(['_orig_mod.fc.weight', '_orig_mod.head.bias']), ['fc.weight', 'head.bias']);
    assert.deepEqual(normalisedNames(['model.fc.weight', 'model.head.bias']), ['fc.weight', 'head.bias']);
    assert.deepEqual(normalisedNames(['state_dict.fc.weight']), ['fc.weight']);
  });

  test('removes nested wrappers in any order', () => {
    assert.deepEqual(normalisedNames(['module._orig_mod.fc.weight', 'module._orig_mod.head.bias']), ['fc.weight', 'head.bias']);
    assert.deepEqual(normalisedNames(['_orig_mod.module.fc.weight', '_orig_mod.module.head.bias']), ['fc.weight', 'head.bias']);
    assert.deepEqual(normalisedNames(['model.module.fc.weight', 'model.module.head.bias']), ['fc.weight', 'head.bias']);
    assert.deepEqual(normalisedNames(['state_dict.model._orig_mod.layer.0.w']), ['layer.0.w']);
  });

  test('keeps a prefix that only some names carry', () => {
    const huggingFace = ['model.embed_tokens.weight', 'model.layers.0.mlp.weight', 'lm_head.weight'];
    assert.deepEqual(normalisedNames(huggingFace), huggingFace);
    assert.deepEqual(normalisedNames(['module.a', 'b']), ['module.a', 'b']);
    // Removing `module.` first exposes a prefix (`model.`) that then is no longer common.
    assert.deepEqual(normalisedNames(['module.model.a', 'module.lm_head.b']), ['model.a', 'lm_head.b']);
  });

  test('never empties a name, keeps the order and leaves plain names alone', () => {
    assert.deepEqual(normalisedNames(['module.', 'module.a']), ['module.', 'module.a']);
    assert.deepEqual(normalisedNames(['fc2.weight', 'fc1.weight']), ['fc2.weight', 'fc1.weight']);
    assert.deepEqual(normalisedNames(['modules.a', 'modules.b']), ['modules.a', 'modules.b']);
    assert.deepEqual(normalisedNames([]), []);
  });

  test('fingerprints use the normalised names and keep the stored ones', async () => {
    const print = await fingerprintFile(
      writeModel([
        { name: 'module._orig_mod.fc.weight', values: new Float32Array(6), shape: [2, 3] },
        { name: 'module._orig_mod.fc.bias', values: new Float32Array(2) },
      ]),
    );
    assert.deepEqual(print.tensors.map((tensor) => tensor.name), ['fc.weight', 'fc.bias']);
    assert.deepEqual(print.tensors.map((tensor) => tensor.storedName), ['module._orig_mod.fc.weight', 'module._orig_mod.fc.bias']);
  });
});

// ---------------------------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------------------------

describe('FingerprintCache', () => {
  const random = seededRandom(9);
  let cacheDir: string;
  let fileA: string;
  let fileB: string;
  before(() => {
    cacheDir = path.join(temp.dir, 'cache');
    fileA = writeModel([{ name: 'w', values: random.normals(20_000, 0.1), shape: [100, 200] }, { name: 'b', values: random.normals(100) }], 'cached-a.safetensors');
    fileB = writeModel([{ name: 'w', values: random.normals(300) }], 'cached-b.safetensors');
  });

  const entries = () => readdirSync(cacheDir);

  test('serves an unchanged file from the cache and recomputes only a touched one', async () => {
    const cache = new FingerprintCache(cacheDir);
    const firstA = await cache.get(fileA);
    const firstB = await cache.get(fileB);
    assert.equal(cache.computed, 2);
    assert.deepEqual(await cache.get(fileA), firstA);
    assert.deepEqual(await cache.get(fileB), firstB);
    assert.equal(cache.computed, 2, 'second reads come from the cache');

    // A new instance over the same folder (a later session) reads the entries from disk.
    const later = new FingerprintCache(cacheDir);
    assert.deepEqual(await later.get(fileA), firstA);
    assert.equal(later.computed, 0);

    // Touch A only: a new mtime, the same bytes.
    const stamp = new Date('2024-03-01T12:00:00Z');
    utimesSync(fileA, stamp, stamp);
    const touched = await later.get(fileA);
    assert.equal(later.computed, 1, 'touched file is fingerprinted again');
    assert.equal(touched.mtimeMs, stamp.getTime());
    assert.deepEqual(touched.tensors, firstA.tensors);
    assert.deepEqual(await later.get(fileB), firstB);
    assert.equal(later.computed, 1, 'untouched file still comes from the cache');
    assert.equal(entries().filter((name) => name.endsWith('.json')).length, 2, 'one entry per file');
    assert.deepEqual(entries().filter((name) => name.endsWith('.tmp')), []);
  });

  test('rewritten contents of the same size are fingerprinted again', async () => {
    const cache = new FingerprintCache(cacheDir);
    const before = await cache.get(fileB);
    const replacement = random.normals(300);
    writeFileSync(fileB, encodeSafetensors([specOf({ name: 'w', values: replacement })]));
    const stamp = new Date('2024-03-02T12:00:00Z');
    utimesSync(fileB, stamp, stamp);
    const after = await cache.get(fileB);
    assert.equal(after.size, before.size);
    assert.notEqual(tensorOf(after, 'w').hash, tensorOf(before, 'w').hash);
    assert.deepEqual(tensorOf(after, 'w').sample, replacement);
    assert.equal(cache.computed, 1);
  });

  test('a corrupt entry and an entry of another fingerprint version are recomputed', async () => {
    const cache = new FingerprintCache(cacheDir);
    const good = await cache.get(fileA);
    const computed = cache.computed;
    const [entry] = entries().filter((name) => name.endsWith('.json')).map((name) => path.join(cacheDir, name)).filter((file) => {
      return (JSON.parse(readFileSync(file, 'utf8')) as { path: string }).path === path.resolve(fileA);
    });
    assert.ok(entry, 'the entry of file A is found');
    const text = readFileSync(entry, 'utf8');

    for (const corrupt of [text.slice(0, text.length / 2), '', '{}', 'null', JSON.stringify({ ...JSON.parse(text), tensors: 'nonsense' })]) {
      writeFileSync(entry, corrupt);
      const cached = await cache.get(fileA);
      assert.deepEqual(cached, good, `recovered from ${JSON.stringify(corrupt.slice(0, 40))}`);
    }
    assert.equal(cache.computed, computed + 5);
    assert.deepEqual(deserialise(readFileSync(entry, 'utf8')), { ...good, path: path.resolve(fileA) }, 'the entry is rewritten whole');

    const stale = JSON.parse(text) as { version: number; tensors: { mean: number }[] };
    stale.version = FINGERPRINT_VERSION + 1;
    stale.tensors[0]!.mean = 12345;
    writeFileSync(entry, JSON.stringify(stale));
    assert.deepEqual(await cache.get(fileA), good);
    assert.equal(cache.computed, computed + 6, 'another version is not trusted');
    assert.deepEqual(await cache.get(fileA), good);
    assert.equal(cache.computed, computed + 6);
    assert.deepEqual(entries().filter((name) => name.endsWith('.tmp')), []);
  });

  test('a relative path is returned as given and cached under the absolute path', async () => {
    const cache = new FingerprintCache(cacheDir);
    const absolute = await cache.get(fileA);
    const computed = cache.computed;
    const relative = path.relative(process.cwd(), fileA);
    assert.ok(!path.isAbsolute(relative));
    const print = await cache.get(relative);
    assert.equal(print.path, relative);
    assert.equal(cache.computed, computed, 'served by the entry of the absolute path');
    assert.deepEqual(print.tensors, absolute.tensors);
  });

  test('concurrent gets of one file all succeed', async () => {
    // The language server may fingerprint a checkpoint for a hover while a scan reads it.
    // Several rounds, each with an empty cache, so that the writes really overlap.
    const expected = (await fingerprintFile(fileB)).tensors;
    for (let round = 0; round < 5; round++) {
      const directory = path.join(temp.dir, `concurrent-cache-${round}`);
      const cache = new FingerprintCache(directory);
      const results = await Promise.allSettled([0, 1, 2, 3].map(() => cache.get(fileB)));
      const failures = results.flatMap((result) => (result.status === 'rejected' ? [String(result.reason)] : []));
      assert.deepEqual(failures, [], `round ${round}: no get fails`);
      assert.deepEqual(readdirSync(directory).filter((name) => name.endsWith('.tmp')), []);
      assert.deepEqual((await new FingerprintCache(directory).get(fileB)).tensors, expected, 'the entry left is whole');
    }
  });

  test('serialise and deserialise round-trip exactly, typed arrays included', async () => {
    const print = await fingerprintFile(fileA);
    const copy = deserialise(serialise(print));
    assert.deepStrictEqual(copy, print);
    for (const tensor of copy.tensors) {
      assert.ok(tensor.sketch instanceof Float64Array);
      assert.ok(tensor.sample instanceof Float32Array);
    }
    // Views into larger buffers (an offset that is not a multiple of 8) come back as their own arrays.
    const backing = new ArrayBuffer(4 + 8 * 10 + 4 * 5);
    const tensor = print.tensors[0]!;
    const sketch = new Float64Array(backing, 8, 5);
    sketch.set([1.5, -2, Number.MIN_VALUE, 1e300, -0]);
    const sample = new Float32Array(backing, 4, 1);
    sample[0] = 0.1;
    const view = { ...print, tensors: [{ ...tensor, sketch, sample }] };
    assert.deepStrictEqual(deserialise(serialise(view)), view);
  });

  test('non-finite statistics survive serialisation', async () => {
    // A causal-mask buffer of −∞ and an fp16 overflow (∞) are real checkpoint contents; their
    // mean, norm and maxAbs are not finite, and a cached fingerprint must equal a fresh one.
    const file = writeModel([
      { name: 'mask', values: Float32Array.of(0, -Infinity, -Infinity, 0) },
      { name: 'overflow', values: Float32Array.of(1, Infinity, 2, -Infinity) },
      { name: 'nan', values: Float32Array.of(1, NaN, 2) },
    ]);
    const print = await fingerprintFile(file);
    assert.equal(tensorOf(print, 'mask').maxAbs, Infinity);
    assert.deepStrictEqual(deserialise(serialise(print)), print);
    const cache = new FingerprintCache(path.join(temp.dir, 'non-finite-cache'));
    const fresh = await cache.get(file);
    assert.deepStrictEqual(await cache.get(file), fresh, 'served from the cache unchanged');
    assert.equal(cache.computed, 1);
  });
});

// ---------------------------------------------------------------------------------------------
// Files changing while read, cancellation
// ---------------------------------------------------------------------------------------------

describe('a file rewritten while it is read', () => {
  const random = seededRandom(21);
  const original = () => [0, 1, 2].map((k) => ({ name: `t${k}`, values: random.normals(5000) }));

  test('is read again and the fingerprint is of the new contents', async () => {
    const file = writeModel(original());
    const replacement = original();
    let calls = 0;
    let rewritten = false;
    const print = await fingerprintFile(file, {
      onProgress: () => {
        calls++;
        if (rewritten) return;
        rewritten = true;
        // An in-place rewrite of the same size, as `torch.save` over an existing file does.
        writeFileSync(file, encodeSafetensors(replacement.map(specOf)));
        utimesSync(file, new Date('2024-04-01T00:00:00Z'), new Date('2024-04-01T00:00:00Z'));
      },
    });
    assert.ok(rewritten);
    assert.ok(calls > 3, `the first read was abandoned and the file read again (${calls} progress calls)`);
    for (const tensor of replacement) assert.deepEqual(tensorOf(print, tensor.name).sample, tensor.values);
    assert.equal(print.mtimeMs, new Date('2024-04-01T00:00:00Z').getTime());
  });

  test('throws FileChangedError when it keeps changing', async () => {
    const file = writeModel(original());
    let seconds = 0;
    await assert.rejects(
      fingerprintFile(file, {
        attempts: 2,
        onProgress: () => {
          const stamp = new Date(Date.UTC(2024, 0, 1) + 1000 * ++seconds);
          utimesSync(file, stamp, stamp);
        },
      }),
      (error: unknown) => error instanceof FileChangedError && error.file === file,
    );
  });
});

describe('cancellation', () => {
  const random = seededRandom(31);
  let file: string;
  before(() => {
    file = writeModel([0, 1, 2, 3].map((k) => ({ name: `t${k}`, values: random.normals(300_000) })));
  });

  test('an aborted signal stops fingerprinting before it starts', async () => {
    await assert.rejects(fingerprintFile(file, { signal: AbortSignal.abort() }), CancelledError);
  });

  test('aborting mid-file stops at the next tensor', async () => {
    const controller = new AbortController();
    const seen: number[] = [];
    await assert.rejects(
      fingerprintFile(file, {
        signal: controller.signal,
        onProgress: (done) => {
          seen.push(done);
          controller.abort();
        },
      }),
      CancelledError,
    );
    assert.equal(seen.length, 1, 'no tensor after the abort is read');
  });

  test('aborting right after the call starts rejects, and the cache records nothing', async () => {
    const cacheDir = path.join(temp.dir, 'cancel-cache');
    const cache = new FingerprintCache(cacheDir);
    const controller = new AbortController();
    const pending = cache.get(file, { signal: controller.signal });
    controller.abort();
    await assert.rejects(pending, CancelledError);
    assert.equal(cache.computed, 0);
    assert.ok(!existsSync(cacheDir) || readdirSync(cacheDir).length === 0, 'no entry or temporary file is written');
  });
});
