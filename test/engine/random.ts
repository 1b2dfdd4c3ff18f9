/**
 * Seeded pseudo-random numbers for tests: every run draws the same values, so a test that
 * passes once passes always, and a failure can be reproduced.
 */
import { mulberry32 } from '../../server/src/engine/repr/probe';

export interface Random {
  /** Uniform on [0, 1). */
  uniform(): number;
  /** Uniform 32-bit unsigned integer. */
  uint32(): number;
  /** Normal with the given mean and standard deviation (Box–Muller). */
  normal(mean?: number, std?: number): number;
  /** A Float32Array of `count` normal values. */
  normals(count: number, std?: number, mean?: number): Float32Array;
}

export function seededRandom(seed: number): Random {
  const next = mulberry32(seed);
  let spare: number | undefined;
  const normal = (mean = 0, std = 1): number => {
    if (spare !== undefined) {
      const value = spare;
      spare = undefined;
      return mean + std * value;
    }
    let u = 0;
    while (u === 0) u = next();
    const v = next();
    const radius = Math.sqrt(-2 * Math.log(u));
    spare = radius * Math.sin(2 * Math.PI * v);
    return mean + std * radius * Math.cos(2 * Math.PI * v);
  };
  return {
    uniform: next,
    uint32: () => Math.floor(next() * 4294967296) >>> 0,
    normal,
    normals(count, std = 1, mean = 0) {
      const values = new Float32Array(count);
      for (let i = 0; i < count; i++) values[i] = normal(mean, std);
      return values;
    },
  };
}
