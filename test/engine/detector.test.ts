import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadDetector, type DetectorCandidate, type LineageDetector } from '../../server/src/engine/detector/detector';
import {
  DETECTOR_CHANNELS,
  DIFFERENCE_FLOOR,
  buildFeatureToken,
  buildPairToken,
  buildWeightTokens,
  resampleToGrid,
  tokenLength,
  type MatrixPair,
} from '../../server/src/engine/detector/detectorInputs';
import { REPO_ROOT, fixturePath, makeTempDir } from '../helpers';

const SHIPPED_ONNX = path.join(REPO_ROOT, 'server', 'src', 'engine', 'detector', 'lineageDetector.onnx');
const SHIPPED_JSON = path.join(REPO_ROOT, 'server', 'src', 'engine', 'detector', 'lineageDetector.json');

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    assert.ok(Math.abs(a - e) <= tolerance * Math.max(1, Math.abs(e)), `${what}[${i}]: ${a} differs from ${e}`);
  }
}

function float32File(...parts: string[]): Float32Array {
  const bytes = readFileSync(fixturePath(...parts));
  const values = new Float32Array(bytes.length / 4);
  for (let i = 0; i < values.length; i++) values[i] = bytes.readFloatLE(i * 4);
  return values;
}

describe('resampleToGrid', () => {
  test('area averaging with fractional cell ends: 3×3 onto 2×2', () => {
    // Each output cell covers 1.5 source cells per axis: weights 2/3, 1/3 | 1/3, 2/3.
    // Rows first: [2, 3, 4] and [6, 7, 8]; then columns: 2·2/3 + 3/3 = 7/3, …
    const grid = resampleToGrid([1, 2, 3, 4, 5, 6, 7, 8, 9], 3, 3, 2);
    assertClose(grid, [7 / 3, 11 / 3, 19 / 3, 23 / 3], 1e-15, 'grid');
  });

  test('nearest upsampling of a matrix smaller than the grid: 2×3 onto 4×4', () => {
    // Output row r copies row ⌊r·2/4⌋ = 0, 0, 1, 1; output column c copies ⌊c·3/4⌋ = 0, 0, 1, 2.
    const grid = resampleToGrid([1, 2, 3, 4, 5, 6], 2, 3, 4);
    assert.deepEqual([...grid], [1, 1, 2, 3, 1, 1, 2, 3, 4, 4, 5, 6, 4, 4, 5, 6]);
  });

  test('one axis upsampled, the other averaged: 1×6 onto 4×4', () => {
    // Columns: cells [0, 1.5), [1.5, 3), [3, 4.5), [4.5, 6) of [0, 3, 6, 9, 12, 15].
    const grid = resampleToGrid([0, 3, 6, 9, 12, 15], 1, 6, 4);
    const row = [0 * (2 / 3) + 3 / 3, 3 / 3 + 6 * (2 / 3), 9 * (2 / 3) + 12 / 3, 12 / 3 + 15 * (2 / 3)];
    assertClose(grid, [...row, ...row, ...row, ...row], 1e-15, 'grid');
  });

  test('a matrix of the grid size comes back unchanged', () => {
    const values = Array.from({ length: 16 }, (_, i) => i * 0.25 - 1);
    assert.deepEqual([...resampleToGrid(values, 4, 4, 4)], values);
  });

  test('area averaging keeps the mean (every output cell covers the same area)', () => {
    const rows = 37;
    const columns = 50;
    const values = Array.from({ length: rows * columns }, (_, i) => Math.sin(i * 1.7) * 3 + (i % 7));
    const grid = resampleToGrid(values, rows, columns, 8);
    const mean = (xs: ArrayLike<number>) => Array.from(xs).reduce((sum, x) => sum + x, 0) / xs.length;
    assert.ok(Math.abs(mean(grid) - mean(values)) < 1e-12, `${mean(grid)} vs ${mean(values)}`);
  });

  test('refuses a value count that does not match the shape, and empty shapes', () => {
    assert.throws(() => resampleToGrid([1, 2, 3], 2, 2, 4), /2×2 matrix needs 4 values, got 3/);
    assert.throws(() => resampleToGrid([], 0, 3, 4), /rows must be a positive integer/);
    assert.throws(() => resampleToGrid([1], 1, 1, 0), /size must be a positive integer/);
  });
});

describe('detector tokens', () => {
  test('channels are parent, child and log(floor + |child − parent|), each over the RMS of the child', () => {
    const parent = Float32Array.from([1, -2, 3, 0, 5, 1]);
    const child = Float32Array.from([2, -2, 1, 1, 5, 3]);
    const token = buildPairToken({ parent, child, rows: 2, columns: 3 }, 4);
    const rms = Math.sqrt((4 + 4 + 1 + 1 + 25 + 9) / 6);
    const grid = (matrix: ArrayLike<number>) => Array.from(resampleToGrid(matrix, 2, 3, 4), (value) => value / rms);
    const difference = child.map((value, i) => Math.abs(value - parent[i]!));
    const expected = [...grid(parent), ...grid(child), ...grid(difference).map((value) => Math.log(DIFFERENCE_FLOOR + value))];
    assert.equal(token.length, DETECTOR_CHANNELS.length * 16);
    assert.deepEqual([...token], expected.map(Math.fround));
  });

  test('an unchanged matrix has the floor as its difference everywhere', () => {
    const matrix = Float32Array.from([0.5, -1, 2, 0.25]);
    const token = buildPairToken({ parent: matrix, child: matrix, rows: 2, columns: 2 }, 3);
    assert.deepEqual([...token.subarray(18)], new Array(9).fill(Math.fround(Math.log(DIFFERENCE_FLOOR))));
    assert.deepEqual([...token.subarray(0, 9)], [...token.subarray(9, 18)]);
  });

  test('refuses a parent and a child of different sizes', () => {
    const pair: MatrixPair = { parent: new Float32Array(6), child: new Float32Array(4), rows: 2, columns: 2 };
    assert.throws(() => buildPairToken(pair, 4), /parent's matrix has 6 values and the child's 4/);
    const features = (rows: number) => ({ values: new Float32Array(rows * 3), rows, columns: 3 });
    assert.throws(() => buildFeatureToken(features(2), features(3), 4), /candidate's features are 2×3 and the child's 3×3/);
  });
});

/** The fixture written by test/zoo/train_detector.py: a child, its parent and an unrelated model. */
interface DetectorCase {
  readonly weight_shapes: [number, number][];
  readonly feature_shape: [number, number];
  readonly token_size: number;
  readonly channels: number;
  readonly scores: number[];
  readonly probabilities: number[];
  readonly no_parent_probability: number;
}

const fixture = JSON.parse(readFileSync(fixturePath('detector', 'case.json'), 'utf8')) as DetectorCase;

/** Matrices per model (child, parent, unrelated), each its weight matrices then its features, as inputs.bin stores them. */
function fixtureModels(): Float32Array[][] {
  const values = float32File('detector', 'inputs.bin');
  const shapes = [...fixture.weight_shapes, fixture.feature_shape];
  let offset = 0;
  const models = [0, 1, 2].map(() =>
    shapes.map(([rows, columns]) => {
      const matrix = values.subarray(offset, offset + rows * columns);
      offset += rows * columns;
      return matrix;
    }),
  );
  assert.equal(offset, values.length, 'inputs.bin holds exactly three models');
  return models;
}

function fixtureCandidates(): DetectorCandidate[] {
  const [child, ...candidates] = fixtureModels();
  const [featureRows, featureColumns] = fixture.feature_shape;
  const weightCount = fixture.weight_shapes.length;
  return candidates.map((candidate) => ({
    weights: fixture.weight_shapes.map(([rows, columns], index) => ({ parent: candidate[index]!, child: child![index]!, rows, columns })),
    features: {
      parent: { values: candidate[weightCount]!, rows: featureRows, columns: featureColumns },
      child: { values: child![weightCount]!, rows: featureRows, columns: featureColumns },
    },
  }));
}

describe('detector tokens equal the training script’s', () => {
  test('weight and feature tokens of the fixture candidate match those PyTorch training built', () => {
    assert.equal(fixture.channels, DETECTOR_CHANNELS.length);
    const candidate = fixtureCandidates()[0]!;
    const size = fixture.token_size;
    const fromPython = float32File('detector', 'tokens.bin');
    const weightTokens = buildWeightTokens(candidate.weights, size);
    const featureToken = buildFeatureToken(candidate.features.parent, candidate.features.child, size);
    assert.equal(fromPython.length, weightTokens.length + tokenLength(size));
    assertClose(weightTokens, fromPython.subarray(0, weightTokens.length), 1e-6, 'weight tokens');
    assertClose(featureToken, fromPython.subarray(weightTokens.length), 1e-6, 'feature token');
  });
});

describe('the shipped ONNX detector in onnxruntime-node', () => {
  let detector: LineageDetector;
  before(async () => {
    detector = await loadDetector(SHIPPED_ONNX, SHIPPED_JSON);
  });
  after(() => detector.dispose());

  test('scores the fixture candidates as PyTorch does', async () => {
    const result = await detector.score(fixtureCandidates());
    assertClose(result.scores, fixture.scores, 1e-4, 'scores');
    assertClose(result.probabilities, fixture.probabilities, 1e-4, 'probabilities');
    assert.ok(Math.abs(result.noParent - fixture.no_parent_probability) < 1e-4, `no parent ${result.noParent}`);
  });

  test('the order of a candidate’s weight matrices does not change its score', async () => {
    const candidate = fixtureCandidates()[0]!;
    const reversed = { ...candidate, weights: [...candidate.weights].reverse() };
    const [forward, backward] = await Promise.all([detector.score([candidate]), detector.score([reversed])]);
    assertClose(backward.scores, forward.scores, 1e-5, 'scores');
  });

  test('with no candidates everything goes to "no parent"', async () => {
    assert.deepEqual(await detector.score([]), { probabilities: [], noParent: 1, scores: [] });
  });

  test('a candidate without weight matrices is refused', async () => {
    const candidate = { ...fixtureCandidates()[0]!, weights: [] };
    await assert.rejects(detector.score([candidate]), /candidate 0 has no weight matrices/);
  });

  test('the record says how the detector was trained and how it did on held-out families', () => {
    const record = JSON.parse(readFileSync(SHIPPED_JSON, 'utf8')) as {
      training: { command: string; seed: number; split: { testFamilies: string[]; trainingFamilies: string[] } };
      results: { test: { closed_set: { top1: number; chance: number } } };
    };
    assert.match(record.training.command, /train_detector\.py/);
    assert.equal(typeof record.training.seed, 'number');
    const { testFamilies, trainingFamilies } = record.training.split;
    assert.ok(testFamilies.length > 0 && testFamilies.every((family) => !trainingFamilies.includes(family)));
    assert.ok(record.results.test.closed_set.top1 > record.results.test.closed_set.chance);
  });
});

describe('loadDetector refuses a record that does not fit', () => {
  let temp: { dir: string; cleanup: () => void };
  before(() => {
    temp = makeTempDir('detector-test-');
  });
  after(() => temp.cleanup());

  function withRecord(change: (record: Record<string, unknown>) => void): string {
    const record = JSON.parse(readFileSync(SHIPPED_JSON, 'utf8')) as Record<string, unknown>;
    change(record);
    const file = path.join(temp.dir, `record${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(file, JSON.stringify(record));
    return file;
  }

  test('tokens built with other channels than the detector was trained on', async () => {
    const file = withRecord((record) => {
      record['channels'] = ['parent', 'child'];
    });
    await assert.rejects(loadDetector(SHIPPED_ONNX, file), (error: Error) => error.message.startsWith(`${file}: the detector was trained on channels`));
  });

  test('a token size that is not a count, and an input the graph lacks', async () => {
    const badSize = withRecord((record) => {
      record['tokenSize'] = 1e9;
    });
    await assert.rejects(loadDetector(SHIPPED_ONNX, badSize), /tokenSize is not a count/);
    const badInput = withRecord((record) => {
      record['inputs'] = { weightTokens: 'weights', featureToken: 'feature_token' };
    });
    await assert.rejects(loadDetector(SHIPPED_ONNX, badInput), /has no input weights/);
  });

  test('a file that is not JSON', async () => {
    const file = path.join(temp.dir, 'broken.json');
    writeFileSync(file, '{"format": ');
    await assert.rejects(loadDetector(SHIPPED_ONNX, file), (error: Error) => error.message.startsWith(`${file}: not JSON`));
  });
});
