import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { FeatureMatrix } from '../../server/src/engine/repr/featureModel';
import { distanceCorrelation, linearCka, similarity, SIMILARITY_METRICS } from '../../server/src/engine/repr/metrics';
import { seededRandom, type Random } from './random';

function matrix(rows: number[][]): FeatureMatrix {
  return { values: Float32Array.from(rows.flat()), rows: rows.length, columns: rows[0]!.length };
}

function randomMatrix(random: Random, rows: number, columns: number): FeatureMatrix {
  return { values: random.normals(rows * columns), rows, columns };
}

function close(actual: number, expected: number, tolerance = 1e-12, message?: string): void {
  assert.ok(Math.abs(actual - expected) <= tolerance * Math.max(1, Math.abs(expected)), `${message ?? ''} ${actual} ≠ ${expected}`);
}

/** A random orthogonal matrix (Gram–Schmidt on normal columns), row-major, for Y ↦ YQ. */
function randomOrthogonal(random: Random, size: number): number[][] {
  const columns: number[][] = [];
  while (columns.length < size) {
    const vector = Array.from({ length: size }, () => random.normal());
    for (const basis of columns) {
      const projection = vector.reduce((sum, value, i) => sum + value * basis[i]!, 0);
      for (let i = 0; i < size; i++) vector[i]! -= projection * basis[i]!;
    }
    const norm = Math.hypot(...vector);
    columns.push(vector.map((value) => value / norm));
  }
  return Array.from({ length: size }, (_, row) => columns.map((column) => column[row]!));
}

function multiply(a: FeatureMatrix, b: number[][]): FeatureMatrix {
  const columns = b[0]!.length;
  const values = new Float32Array(a.rows * columns);
  for (let row = 0; row < a.rows; row++) {
    for (let j = 0; j < columns; j++) {
      let sum = 0;
      for (let k = 0; k < a.columns; k++) sum += a.values[row * a.columns + k]! * b[k]![j]!;
      values[row * columns + j] = sum;
    }
  }
  return { values, rows: a.rows, columns };
}

/** CKA written the textbook way, HSIC with the centring matrix H = I − 11ᵀ/n on uncentred features. */
function referenceCka(a: FeatureMatrix, b: FeatureMatrix): number {
  const n = a.rows;
  const kernel = (m: FeatureMatrix) =>
    Array.from({ length: n }, (_, i) =>
      Array.from({ length: n }, (_, j) => {
        let sum = 0;
        for (let k = 0; k < m.columns; k++) sum += m.values[i * m.columns + k]! * m.values[j * m.columns + k]!;
        return sum;
      }),
    );
  const centre = (k: number[][]) => {
    const h = (i: number, j: number) => (i === j ? 1 : 0) - 1 / n;
    const hk = k.map((_, i) => k.map((__, j) => k.reduce((sum, row, m) => sum + h(i, m) * row[j]!, 0)));
    return hk.map((row, i) => row.map((_, j) => row.reduce((sum, value, m) => sum + value * h(m, j), 0)));
  };
  const hsic = (k: number[][], l: number[][]) => k.reduce((sum, row, i) => sum + row.reduce((inner, value, j) => inner + value * l[j]![i]!, 0), 0);
  const kc = centre(kernel(a));
  const lc = centre(kernel(b));
  return hsic(kc, lc) / Math.sqrt(hsic(kc, kc) * hsic(lc, lc));
}

describe('distance metrics on a hand-computed pair', () => {
  // D = a − b = [[0, 2], [3, 0]]
  const a = matrix([
    [1, 2],
    [3, 4],
  ]);
  const b = matrix([
    [1, 0],
    [0, 4],
  ]);

  test('l1, l2, lp, linf', () => {
    close(similarity('l1', a, b), -(0 + 2 + 3 + 0) / 4);
    close(similarity('l2', a, b), -Math.sqrt((4 + 9) / 4));
    close(similarity('lp', a, b), -Math.pow((16 + 81) / 4, 1 / 4));
    close(similarity('linf', a, b), -(2 + 3) / 2);
  });

  test('lse is the mean over rows of log(mean exp |D|) at temperature 1', () => {
    const rowSoftMaxima = [Math.log((Math.exp(0) + Math.exp(2)) / 2), Math.log((Math.exp(3) + Math.exp(0)) / 2)];
    close(similarity('lse', a, b), -(rowSoftMaxima[0]! + rowSoftMaxima[1]!) / 2);
  });

  test('lse lies between l1 and linf and does not overflow on large differences', () => {
    const large = matrix([[1000, -1000, 0]]);
    const zero = matrix([[0, 0, 0]]);
    const value = similarity('lse', large, zero);
    assert.ok(Number.isFinite(value));
    close(value, -(1000 + Math.log((2 + Math.exp(-1000)) / 3)));
    assert.ok(value <= similarity('l1', large, zero) && value >= similarity('linf', large, zero));
  });

  test('identical features score 0 on every distance and 1 on CKA and dCor', () => {
    for (const metric of SIMILARITY_METRICS) {
      const expected = metric === 'cka' || metric === 'dcor' ? 1 : 0;
      close(similarity(metric, a, a), expected, 1e-12, metric);
    }
  });

  test('the nearer matrix is more similar on every distance', () => {
    const nearer = matrix([
      [1, 1],
      [2, 4],
    ]);
    for (const metric of ['l1', 'l2', 'lp', 'lse', 'linf'] as const) {
      assert.ok(similarity(metric, nearer, b) > similarity(metric, a, b), metric);
    }
  });

  test('mismatched shapes are refused', () => {
    assert.throws(() => similarity('l1', a, matrix([[1, 2, 3]])), /differ in shape/);
    assert.throws(() => similarity('cka', a, matrix([[1, 2, 3]])), /different probes/);
  });
});

describe('linear CKA', () => {
  test('of one-column features is the squared Pearson correlation', () => {
    // x − mean = [−1, 0, 1]; y − mean = [−7/3, −1/3, 8/3]: r² = 5² / (2 · 114/9) = 225/228.
    close(linearCka(matrix([[1], [2], [3]]), matrix([[2], [4], [7]])), 225 / 228);
  });

  test('agrees with the textbook HSIC form on both the Gram and the cross-product path', () => {
    const random = seededRandom(11);
    for (const [rows, columnsA, columnsB] of [
      [6, 9, 12], // rows ≤ columns: n×n Gram matrices
      [15, 4, 3], // rows > columns: d×d cross products
    ] as const) {
      const a = randomMatrix(random, rows, columnsA);
      const b = randomMatrix(random, rows, columnsB);
      close(linearCka(a, b), referenceCka(a, b), 1e-9, `${rows}×${columnsA} vs ${rows}×${columnsB}`);
    }
  });

  test('is invariant to an orthogonal transform and an isotropic scale of either side', () => {
    const random = seededRandom(5);
    const a = randomMatrix(random, 20, 6);
    const b = randomMatrix(random, 20, 6);
    // Make b partly depend on a so the value is not near 0.
    for (let i = 0; i < b.values.length; i++) b.values[i]! += a.values[i]!;
    const base = linearCka(a, b);
    assert.ok(base > 0.3 && base < 0.99, `CKA ${base}`);
    const rotated = multiply(b, randomOrthogonal(random, 6));
    close(linearCka(a, rotated), base, 1e-6, 'orthogonal transform');
    const scaled = { ...a, values: a.values.map((value) => value * 7.5) };
    close(linearCka(scaled, b), base, 1e-6, 'isotropic scale');
    // An anisotropic scale is not ignored.
    const stretched = multiply(a, [0, 1, 2, 3, 4, 5].map((i) => [0, 1, 2, 3, 4, 5].map((j) => (i === j ? (i === 0 ? 20 : 1) : 0))));
    assert.ok(Math.abs(linearCka(stretched, b) - base) > 1e-3);
  });

  test('is 0 against constant features', () => {
    assert.equal(linearCka(matrix([[1], [2], [3]]), matrix([[4], [4], [4]])), 0);
  });
});

describe('distance correlation', () => {
  test('matches a hand-computed value', () => {
    // Double-centred distance matrices of x = [0, 1, 2] and y = [0, 1, 0] give
    // ΣAB = 72/81, ΣA² = 360/81, ΣB² = 144/81, so dCor² = 72 / sqrt(360 · 144) = 1/√10.
    close(distanceCorrelation(matrix([[0], [1], [2]]), matrix([[0], [1], [0]])), Math.pow(10, -1 / 4), 1e-12);
  });

  test('is 1 for features related by a shift, rotation and scale', () => {
    const random = seededRandom(3);
    const a = randomMatrix(random, 30, 4);
    const moved = multiply(a, randomOrthogonal(random, 4));
    for (let i = 0; i < moved.values.length; i++) moved.values[i] = moved.values[i]! * 3 + 1;
    close(distanceCorrelation(a, moved), 1, 1e-6);
  });

  test('is small for independent data and large for dependent data that is uncorrelated', () => {
    const random = seededRandom(7);
    const rows = 400;
    const x = randomMatrix(random, rows, 1);
    const independent = randomMatrix(random, rows, 1);
    const squared = { ...x, values: x.values.map((value) => value * value) };
    const independentValue = distanceCorrelation(x, independent);
    const dependentValue = distanceCorrelation(x, squared);
    assert.ok(independentValue < 0.15, `independent: ${independentValue}`);
    assert.ok(dependentValue > 0.4, `x against x²: ${dependentValue}`);
    // Linear CKA (a squared correlation) misses the dependence that dCor sees.
    assert.ok(linearCka(x, squared) < 0.05, `CKA of x and x²: ${linearCka(x, squared)}`);
  });
});
