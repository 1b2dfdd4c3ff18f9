/**
 * Deterministic pseudo-random functions of an element's index. Every checkpoint uses the same
 * ones, so tensors of the same size are sampled at the same positions and sketched with the
 * same buckets and signs: sketches and samples of two files can be subtracted directly.
 */
export function mix32(value: number, seed: number): number {
  const high = Math.floor(value / 4294967296);
  let h = (value ^ seed ^ Math.imul(high, 0x9e3779b9)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  return (h ^ (h >>> 16)) >>> 0;
}

export const SKETCH_SEED = 0x5eed1e55;
export const SAMPLE_SEED = 0x0b5e55ed;
export const ROW_SAMPLE_SEED = 0x2a3b4c5d;
export const ROW_PROJECTION_SEED = 0x51f15eed;
/** Seed of the order-blind content hash of a tensor's values. */
export const CONTENT_SEED = 0x6a09e667;
