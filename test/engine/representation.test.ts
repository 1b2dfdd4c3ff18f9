/**
 * Probe inputs, the fine-tuning approximation's finite difference against hand-derived
 * derivatives, and the representation method on the small model zoo (real PyTorch training,
 * see test/zoo/README.md; generated like the zoo scan test does, which needs Debian's
 * /usr/bin/python3 with torch, numpy and the Fashion-MNIST package).
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CheckpointError } from '../../server/src/engine/errors';
import { openCheckpoint } from '../../server/src/engine/formats/index';
import { recogniseArchitecture } from '../../server/src/engine/repr/architecture';
import type { FeatureMatrix, FeatureModel } from '../../server/src/engine/repr/featureModel';
import { similarity, type SimilarityMetric } from '../../server/src/engine/repr/metrics';
import { decodeImage, defaultProbe, loadProbe, probeFor, resize, type Probe } from '../../server/src/engine/repr/probe';
import { DEFAULT_ALPHA, scoreCandidates, type ParameterValues } from '../../server/src/engine/repr/representation';
import { loadParameters, openStateDictFeatureModel } from '../../server/src/engine/repr/stateDictModel';
import { readZoo, type ZooQuery } from '../bench/zooTruth';
import { fixturePath, makeTempDir } from '../helpers';
import { usingCheckpoint } from './checkpointTesting';
import { seededRandom } from './random';
import { ensureSmallZoo } from './smallZoo';

const IMAGES = fixturePath('repr', 'images');
const PIXEL = 1 / 255;

let temp: { dir: string; cleanup: () => void };
before(() => {
  temp = makeTempDir('representation-test-');
});
after(() => temp.cleanup());

/** A .npy file (format 1.0) holding `data` as the given dtype and shape. */
function writeNpy(file: string, descr: string, shape: number[], data: Buffer): string {
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const prefix = 10;
  header += ' '.repeat(63 - ((prefix + header.length) % 64)) + '\n';
  const preamble = Buffer.alloc(prefix);
  Buffer.from('\x93NUMPY', 'latin1').copy(preamble);
  preamble[6] = 1;
  preamble.writeUInt16LE(header.length, 8);
  writeFileSync(file, Buffer.concat([preamble, Buffer.from(header, 'latin1'), data]));
  return file;
}

async function expectedImages(): Promise<Map<string, { shape: readonly number[]; values: Float64Array }>> {
  return usingCheckpoint(openCheckpoint(fixturePath('repr', 'images.expected.npz')), async (checkpoint) => {
    const arrays = new Map<string, { shape: readonly number[]; values: Float64Array }>();
    for (const tensor of checkpoint.tensors) arrays.set(tensor.name, { shape: tensor.shape, values: await tensor.read() });
    return arrays;
  });
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(Math.abs(actual[i]! - expected[i]!) <= tolerance, `${what}[${i}]: ${actual[i]} against ${expected[i]}`);
  }
}

/** Height × width × channels interleaved → channels × height × width. */
function planar(values: ArrayLike<number>, height: number, width: number, channels: number, scale = 1): number[] {
  const out: number[] = [];
  for (let c = 0; c < channels; c++) for (let p = 0; p < height * width; p++) out.push(values[p * channels + c]! * scale);
  return out;
}

describe('default probe', () => {
  test('smooth images filling [0, 1], the same for the same seed', () => {
    const side = 32;
    const pixels = side * side;
    const probe = defaultProbe([3, side, side], { rows: 4, seed: 5 });
    assert.equal(probe.rows, 4);
    assert.equal(probe.values.length, 4 * 3 * pixels);
    assert.deepEqual(defaultProbe([3, side, side], { rows: 4, seed: 5 }).values, probe.values);
    assert.notDeepEqual(defaultProbe([3, side, side], { rows: 4, seed: 6 }).values, probe.values);
    for (let plane = 0; plane < 4 * 3; plane++) {
      const image = probe.values.subarray(plane * pixels, (plane + 1) * pixels);
      assert.equal(Math.min(...image), 0);
      assert.equal(Math.max(...image), 1);
      // Neighbouring pixels differ far less than in noise (about 1/3 for uniform noise).
      let step = 0;
      for (let y = 0; y < side; y++) for (let x = 1; x < side; x++) step += Math.abs(image[y * side + x]! - image[y * side + x - 1]!);
      assert.ok(step / (side * (side - 1)) < 0.1, `mean neighbour difference ${step / (side * (side - 1))}`);
    }
    assert.match(probe.source, /4 smooth random images 3×32×32 in \[0, 1\] \(seed 5\)/);
  });

  test('a flat square input is a gray image; other vectors get uniform values', () => {
    assert.match(defaultProbe([784], { rows: 2 }).source, /smooth random images 1×28×28/);
    const vector = defaultProbe([20], { rows: 3 });
    assert.match(vector.source, /uniform random samples/);
    assert.ok(vector.values.every((value) => value >= 0 && value < 1));
    assert.equal(defaultProbe([5], {}).rows, 64);
    // An input shape read from a header cannot make the probe allocate without bound.
    assert.throws(() => defaultProbe([3, 100000, 100000], { rows: 1 }), /exceed \d+ values; use fewer rows/);
  });

  test('probeFor builds the default without a path and reads the path when given', async () => {
    assert.match((await probeFor([784], undefined, { rows: 2 })).source, /^default probe/);
    assert.match((await probeFor([784], fixturePath('repr', 'mlp.expected.npz'), { rows: 2 })).source, /mlp\.expected\.npz \[probe\]/);
  });
});

describe('probe from arrays', () => {
  test('picks the array whose samples fit the input, flat or shaped, up to the row limit', async () => {
    const file = fixturePath('repr', 'mlp.expected.npz');
    const stored = await usingCheckpoint(openCheckpoint(file), async (checkpoint) => checkpoint.tensors.find((tensor) => tensor.name === 'probe')!.read());
    const flat = await loadProbe(file, [784]);
    assert.equal(flat.rows, 3);
    assert.deepEqual(flat.values, Float32Array.from(stored));
    const image = await loadProbe(file, [1, 28, 28], { rows: 2 });
    assert.equal(image.rows, 2);
    assert.deepEqual(image.sampleShape, [1, 28, 28]);
    assert.deepEqual(image.values, Float32Array.from(stored.subarray(0, 2 * 784)));
    assert.match(image.source, /\[probe\] \(2 of 3 samples\)$/);
  });

  test('channels-last 8-bit images are transposed and scaled to [0, 1]', async () => {
    const pixels = Buffer.from(Array.from({ length: 2 * 4 * 5 * 3 }, (_, i) => (i * 7) % 256));
    const file = writeNpy(path.join(temp.dir, 'nhwc.npy'), '|u1', [2, 4, 5, 3], pixels);
    const probe = await loadProbe(file, [3, 4, 5]);
    assert.equal(probe.rows, 2);
    for (let n = 0; n < 2; n++) {
      const sample = pixels.subarray(n * 60, (n + 1) * 60);
      assertClose(probe.values.subarray(n * 60, (n + 1) * 60), planar(sample, 4, 5, 3, 1 / 255), 1e-7, `sample ${n}`);
    }
    assert.match(probe.source, /8-bit values scaled by 1\/255/);
  });

  test('an array that does not fit is an error naming the file and the arrays', async () => {
    const file = fixturePath('repr', 'mlp.expected.npz');
    await assert.rejects(
      loadProbe(file, [3, 32, 32]),
      (error: unknown) => error instanceof CheckpointError && error.file === file && /no array holds samples of the model's input shape \[3, 32, 32\] \(arrays: probe \[3, 784\], features \[3, 6\]\)/.test(error.message),
    );
    await assert.rejects(loadProbe(path.join(temp.dir, 'absent.npy'), [3]), (error: unknown) => error instanceof CheckpointError && /absent\.npy: cannot read the probe: ENOENT/.test(error.message));
    const nonFinite = Buffer.alloc(8);
    nonFinite.writeFloatLE(Number.NaN, 4);
    const file2 = writeNpy(path.join(temp.dir, 'nan.npy'), '<f4', [1, 2], nonFinite);
    await assert.rejects(loadProbe(file2, [2]), /nan\.npy: array nan holds values that are not finite/);
  });
});

describe('probe from images', () => {
  let expected: Awaited<ReturnType<typeof expectedImages>>;
  before(async () => {
    expected = await expectedImages();
  });

  test('PNG (RGB, gray, RGBA, gray+alpha, palette) and PPM/PGM decode to what Pillow wrote', () => {
    const rgb = expected.get('rgb')!.values;
    const gray = expected.get('gray')!.values;
    const scaled = (values: Float64Array) => Array.from(values, (value) => value / 255);
    for (const [file, channels, values] of [
      ['a_rgb.png', 3, rgb],
      ['b_gray.png', 1, gray],
      ['c_rgba.png', 3, rgb],
      ['d_gray_alpha.png', 1, gray],
      ['e_palette.png', 3, expected.get('palette_rgb')!.values],
      ['f_rgb.ppm', 3, rgb],
      ['g_gray.pgm', 1, gray],
    ] as const) {
      const image = decodeImage(file, readFileSync(path.join(IMAGES, file)));
      assert.equal(image.width, 5, file);
      assert.equal(image.height, 4, file);
      assert.equal(image.channels, channels, file);
      assertClose(image.pixels, scaled(values), 1e-7, file);
    }
  });

  test("resizing matches Pillow's bilinear resize, shrinking and enlarging", () => {
    const gray = decodeImage('b_gray.png', readFileSync(path.join(IMAGES, 'b_gray.png')));
    // Pillow rounds to 8 bits after each of its two passes: up to one level apart.
    const tolerance = PIXEL + 1e-6;
    assertClose(resize(gray, 3, 2).pixels, Array.from(expected.get('gray_down_3x2')!.values, (v) => v / 255), tolerance, 'down');
    assertClose(resize(gray, 8, 6).pixels, Array.from(expected.get('gray_up_8x6')!.values, (v) => v / 255), tolerance, 'up');
    // A constant image stays constant.
    const flat = { width: 7, height: 3, channels: 1 as const, pixels: new Float32Array(21).fill(0.25) };
    assertClose(resize(flat, 2, 5).pixels, new Array(10).fill(0.25), 1e-7, 'constant');
  });

  test('a folder gives its images in name order, converted to the input channels and size', async () => {
    const rgb = await loadProbe(IMAGES, [3, 4, 5]);
    assert.equal(rgb.rows, 7);
    const sample = (probe: Probe, n: number) => probe.values.subarray(n * 60, (n + 1) * 60);
    assertClose(sample(rgb, 0), planar(expected.get('rgb')!.values, 4, 5, 3, 1 / 255), 1e-7, 'a_rgb');
    const grayValues = expected.get('gray')!.values;
    assertClose(sample(rgb, 1), [0, 1, 2].flatMap(() => Array.from(grayValues, (v) => v / 255)), 1e-7, 'b_gray as RGB');
    // RGB to gray is ITU-R 601 luma, as Pillow's convert("L") (which rounds to 8 bits).
    const gray = await loadProbe(IMAGES, [1, 4, 5], { rows: 1 });
    assert.equal(gray.rows, 1);
    assertClose(gray.values, Array.from(grayValues, (v) => v / 255), PIXEL / 2 + 1e-6, 'a_rgb as gray');
    // A flat 784-wide input takes 28×28 gray images.
    const flat = await loadProbe(IMAGES, [784], { rows: 2 });
    assert.equal(flat.values.length, 2 * 784);
    assert.match(flat.source, /2 images from .*, resized to 1×28×28/);
  });

  test('bad images are errors naming the file', async () => {
    const folder = (name: string) => {
      const dir = path.join(temp.dir, name);
      mkdirSync(dir);
      return dir;
    };
    const original = readFileSync(path.join(IMAGES, 'a_rgb.png'));
    const cases: [string, Buffer, RegExp][] = [
      ['crc.png', Buffer.from(original).fill(0x55, 40, 41), /fails its CRC check/],
      ['truncated.png', original.subarray(0, original.length - 20), /PNG (is truncated|chunk .* runs past the end)/],
      ['gray16.png', readFileSync(fixturePath('repr', 'gray16.png')), /PNG with 16 bits per sample; probe images must have 8/],
      ['text.png', Buffer.from('not an image at all'), /not a PNG or a binary PGM\/PPM image/],
      ['huge.png', hugePng(), /image of 100000×100000 pixels is empty or larger than/],
      ['short.pgm', Buffer.from('P5\n4 4\n255\n\x01\x02'), /PGM\/PPM is truncated/],
    ];
    for (const [name, bytes, message] of cases) {
      const dir = folder(name.replace('.', '-'));
      const file = path.join(dir, name);
      writeFileSync(file, bytes);
      await assert.rejects(loadProbe(dir, [3, 4, 5]), (error: unknown) => error instanceof CheckpointError && error.file === file && message.test(error.message), name);
    }
    await assert.rejects(loadProbe(folder('empty'), [3, 4, 5]), /no PNG, PGM or PPM images in this folder/);
    await assert.rejects(loadProbe(IMAGES, [20]), /the model's input \[20\] is not an image/);
    copyFileSync(path.join(IMAGES, 'a_rgb.png'), path.join(folder('four-channels'), 'a.png'));
    await assert.rejects(loadProbe(path.join(temp.dir, 'four-channels'), [4, 4, 5]), /takes 4-channel images/);
  });
});

/** A PNG whose IHDR (with a valid CRC) claims 100000 × 100000 pixels. */
function hugePng(): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(100000, 0);
  ihdr.writeUInt32BE(100000, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const body = Buffer.concat([Buffer.from('IHDR', 'latin1'), ihdr]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  const length = Buffer.alloc(4);
  length.writeUInt32BE(13);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), length, body, crc]);
}

function crc32(bytes: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/**
 * F = tanh(X Wᵀ): one nonlinear layer whose derivative along a direction Δ is known by hand,
 * dF = (1 − F²) ∘ (X Δᵀ).
 */
class TanhFeatures implements FeatureModel {
  readonly description = 'tanh layer 4→3';
  readonly inputShape = [4];
  readonly parameters = new Map([['w', [3, 4]]]);
  readonly device = 'test';

  async features(probe: Float32Array, rows: number, parameters: ReadonlyMap<string, Float32Array>): Promise<FeatureMatrix> {
    const w = parameters.get('w')!;
    return { values: Float32Array.from(this.preActivation(probe, rows, w), Math.tanh), rows, columns: 3 };
  }

  preActivation(probe: Float32Array, rows: number, w: Float32Array): Float64Array {
    const z = new Float64Array(rows * 3);
    for (let r = 0; r < rows; r++) for (let o = 0; o < 3; o++) for (let k = 0; k < 4; k++) z[r * 3 + o]! += probe[r * 4 + k]! * w[o * 4 + k]!;
    return z;
  }

  async dispose(): Promise<void> {}
}

describe('the fine-tuning approximation', () => {
  const random = seededRandom(21);
  const rows = 6;
  const probe: Probe = { values: random.normals(rows * 4), rows, sampleShape: [4], source: 'test' };
  const child: ParameterValues = new Map([['w', random.normals(12, 0.5)]]);
  const candidates: ParameterValues[] = [0.3, 1, 2].map((spread) => {
    const w = child.get('w')!.map((value) => value + spread * random.normal(0, 0.3));
    return new Map([['w', w]]);
  });
  const model = new TanhFeatures();

  /** d/dt s(F(θ_i + tΔ), F_c) at 0, from dF = (1 − F²)∘(XΔᵀ) and the derivative of each metric. */
  async function analyticSlope(metric: SimilarityMetric, candidate: ParameterValues): Promise<number> {
    const wi = candidate.get('w')!;
    const delta = Float32Array.from(child.get('w')!, (value, i) => value - wi[i]!);
    const f = (await model.features(probe.values, rows, candidate)).values;
    const fc = (await model.features(probe.values, rows, child)).values;
    const direction = model.preActivation(probe.values, rows, delta);
    const d = Array.from(f, (value, i) => value - fc[i]!);
    const e = Array.from(f, (value, i) => (1 - value * value) * direction[i]!);
    const mean = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;
    switch (metric) {
      case 'l1': // s = −mean|D|
        return -mean(d.map((value, i) => Math.sign(value) * e[i]!));
      case 'l2': // s = −sqrt(mean D²)
        return -mean(d.map((value, i) => value * e[i]!)) / Math.sqrt(mean(d.map((value) => value * value)));
      case 'lp': // s = −(mean D⁴)^(1/4)
        return -mean(d.map((value, i) => value ** 3 * e[i]!)) * mean(d.map((value) => value ** 4)) ** -0.75;
      case 'linf': {
        // s = −mean over rows of max|D|: only each row's largest difference moves it.
        let sum = 0;
        for (let r = 0; r < rows; r++) {
          const row = [0, 1, 2].map((j) => r * 3 + j);
          const top = row.reduce((best, i) => (Math.abs(d[i]!) > Math.abs(d[best]!) ? i : best));
          sum += Math.sign(d[top]!) * e[top]!;
        }
        return -sum / rows;
      }
      default:
        throw new Error(`no hand derivative for ${metric}`);
    }
  }

  test('the central difference equals the hand-derived directional derivative', async () => {
    for (const metric of ['l1', 'l2', 'lp', 'linf'] as const) {
      const scores = await scoreCandidates(model, probe, child, candidates, { metric, approximation: true, alpha: 0.7 });
      for (const [i, candidate] of candidates.entries()) {
        const expected = await analyticSlope(metric, candidate);
        const { direct, slope, score } = scores[i]!;
        assert.ok(Math.abs(slope! - expected) <= 1e-3 * Math.abs(expected), `${metric}, candidate ${i}: slope ${slope} against ${expected}`);
        assert.ok(expected > 0, 'moving toward the child makes the features more similar');
        assert.equal(direct, similarity(metric, await model.features(probe.values, rows, candidate), await model.features(probe.values, rows, child)));
        assert.equal(score, direct + 0.7 * slope!);
      }
    }
  });

  test('without the approximation the score is the direct similarity; the child itself scores best', async () => {
    const scores = await scoreCandidates(model, probe, child, [...candidates, child], { metric: 'l1', approximation: false });
    for (const entry of scores) {
      assert.equal(entry.slope, undefined);
      assert.equal(entry.score, entry.direct);
    }
    assert.ok(scores[3]!.score === 0, `the child against itself: ${scores[3]!.score}`);
    assert.ok(scores[0]!.score > scores[2]!.score, 'the nearer candidate is more similar');
  });

  test('parameters that do not fit the model are refused, naming whose', async () => {
    await assert.rejects(scoreCandidates(model, probe, child, [new Map([['w', new Float32Array(5)]])]), /candidate 1: parameter w has 5 values; tanh layer 4→3 needs 12/);
    await assert.rejects(scoreCandidates(model, probe, new Map(), candidates), /the child has no values for parameter w/);
    await assert.rejects(scoreCandidates(model, probe, child, candidates, { epsilon: 0 }), /ε must lie in \(0, 1\]/);
  });
});

describe('the small zoo', () => {
  /**
   * Measured on seed 0 (14 fine-tune queries) with the default α: l1 top-1 8/14 direct and
   * 8/14 with the approximation (the full zoo, 85 queries, gains: 56 → 58). The bound allows
   * one more miss; below it the method would no longer find the parent for most queries.
   */
  const MIN_APPROXIMATION_TOP1 = 0.5;
  const MIN_QUERIES = 10;

  let ZOO_DIR: string;
  before(() => {
    ZOO_DIR = ensureSmallZoo();
  });

  /**
   * The closed-set fine-tune queries (the paper's task; derived copies are left to the weight
   * methods). Candidates in formats the readers do not open yet, or of another shape, are left
   * out of a query, and a child that cannot be run leaves out its query.
   */
  test('l1 with the approximation ranks the true parent first for most fine-tune queries', async (t) => {
    const { truth, modelsDir } = readZoo(ZOO_DIR);
    const loaded = new Map<string, ParameterValues | undefined>();
    const load = async (file: string, model: FeatureModel) => {
      const key = `${file}\n${model.description}`;
      if (!loaded.has(key)) {
        try {
          loaded.set(key, await usingCheckpoint(openCheckpoint(path.join(modelsDir, file)), (checkpoint) => loadParameters(checkpoint, model)));
        } catch (error) {
          if (!(error instanceof CheckpointError)) throw error;
          loaded.set(key, undefined);
        }
      }
      return loaded.get(key);
    };
    let queries = 0;
    let directRight = 0;
    let approximationRight = 0;
    const skipped: string[] = [];
    // truth.json marks each query with the relation of the child to its parent.
    for (const query of truth.queries.filter((entry) => (entry as ZooQuery & { relation?: string }).relation === 'finetune')) {
      const recognition = await usingCheckpoint(openCheckpoint(path.join(modelsDir, query.query)), async (checkpoint) => recogniseArchitecture(checkpoint.tensors)).catch(() => undefined);
      if (!recognition || !('architecture' in recognition)) {
        skipped.push(query.query);
        continue;
      }
      const model = await openStateDictFeatureModel(recognition.architecture);
      const child = await load(query.query, model);
      if (!child) {
        skipped.push(query.query);
        continue;
      }
      const runnable: { path: string; values: ParameterValues }[] = [];
      for (const candidate of query.candidates) {
        const values = await load(candidate.path, model);
        if (values) runnable.push({ path: candidate.path, values });
      }
      const probe = await loadProbe(path.join(ZOO_DIR, 'probe.npy'), model.inputShape, { rows: 128 });
      const scores = await scoreCandidates(model, probe, child, runnable.map((candidate) => candidate.values), { metric: 'l1', approximation: true });
      const best = (key: 'direct' | 'score') => runnable[scores.reduce((top, entry, i) => (entry[key] > scores[top]![key] ? i : top), 0)]!.path;
      queries++;
      if (best('direct') === query.true_parent) directRight++;
      if (best('score') === query.true_parent) approximationRight++;
    }
    t.diagnostic(
      `l1 top-1 over ${queries} fine-tune queries: direct ${directRight}/${queries}, with the approximation (α = ${DEFAULT_ALPHA}) ${approximationRight}/${queries}` +
        (skipped.length ? `; ${skipped.length} queries not runnable` : ''),
    );
    assert.ok(queries >= MIN_QUERIES, `${queries} runnable queries`);
    assert.ok(approximationRight / queries >= MIN_APPROXIMATION_TOP1, `${approximationRight}/${queries}`);
  });
});
