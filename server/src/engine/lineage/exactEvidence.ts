import type { Fingerprint, TensorFingerprint } from '../fingerprint/fingerprint';

/**
 * Weights that get no gradient while fine-tuning (inputs that are always zero, dead units,
 * frozen layers) keep their parent's values: exactly without weight decay, all scaled by one
 * common factor under SGD weight decay. A child therefore shares such "inherited" values with
 * its true parent that a sibling, which trained those weights itself, does not have. Counted
 * on the fingerprints' samples, which sit at the same positions in every file.
 */
export interface ExactEvidence {
  /** Sampled elements the child inherited from `a` but not from `b`. */
  readonly onlyA: number;
  /** Sampled elements the child inherited from `b` but not from `a`. */
  readonly onlyB: number;
}

const tensorMaps = new WeakMap<Fingerprint, Map<string, TensorFingerprint>>();

export function tensorsByName(fingerprint: Fingerprint): Map<string, TensorFingerprint> {
  let map = tensorMaps.get(fingerprint);
  if (!map) {
    map = new Map(fingerprint.tensors.map((tensor) => [tensor.name, tensor]));
    tensorMaps.set(fingerprint, map);
  }
  return map;
}

/** Relative tolerance of a scaled match: float32 rounding accumulated over a few hundred steps. */
const SCALE_TOLERANCE = 2e-6;
/** A common factor must explain at least this many of the probed elements to count. */
const MIN_SCALED_ELEMENTS = 4;
/** Elements whose ratios are tallied to find the common factor. */
const FACTOR_PROBE = 1024;

const inheritedCache = new WeakMap<TensorFingerprint, WeakMap<TensorFingerprint, Uint8Array>>();

/**
 * Marks the child's sampled elements that equal the candidate's times the factor most of them
 * share (1 when untouched). The factor is found as the mode of the element ratios.
 */
export function inheritedMask(child: TensorFingerprint, candidate: TensorFingerprint): Uint8Array {
  let byCandidate = inheritedCache.get(child);
  if (!byCandidate) inheritedCache.set(child, (byCandidate = new WeakMap()));
  const cached = byCandidate.get(candidate);
  if (cached) return cached;
  const c = child.sample;
  const x = candidate.sample;
  const n = Math.min(c.length, x.length);
  // The common factor is looked for among evenly spread elements only: a factor shared by
  // enough elements to matter shows up there, and the mask below still covers every element.
  const buckets = new Map<number, number>();
  const stride = Math.max(1, Math.floor(n / FACTOR_PROBE));
  for (let i = 0; i < n; i += stride) {
    if (c[i] === 0 || x[i] === 0) continue;
    const key = Math.round((c[i]! / x[i]!) * 1e5);
    buckets.set(key, (buckets.get(key) ?? 0) + 1);
  }
  let modeKey = 0;
  let modeCount = 0;
  for (const [key, count] of buckets) {
    if (count > modeCount) {
      modeKey = key;
      modeCount = count;
    }
  }
  const factor = modeCount >= MIN_SCALED_ELEMENTS ? medianRatio(c, x, n, modeKey) : 1;
  const mask = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    mask[i] = c[i] === x[i] || Math.abs(c[i]! - factor * x[i]!) <= SCALE_TOLERANCE * Math.abs(c[i]!) ? 1 : 0;
  }
  byCandidate.set(candidate, mask);
  return mask;
}

function medianRatio(c: Float32Array, x: Float32Array, n: number, key: number): number {
  const ratios: number[] = [];
  for (let i = 0; i < n; i++) {
    if (c[i] === 0 || x[i] === 0) continue;
    const ratio = c[i]! / x[i]!;
    if (Math.round(ratio * 1e5) === key) ratios.push(ratio);
  }
  ratios.sort((p, q) => p - q);
  return ratios[ratios.length >> 1]!;
}

export function exactEvidence(child: Fingerprint, a: Fingerprint, b: Fingerprint, layerNames: Iterable<string>): ExactEvidence {
  const childTensors = tensorsByName(child);
  const aTensors = tensorsByName(a);
  const bTensors = tensorsByName(b);
  let onlyA = 0;
  let onlyB = 0;
  for (const name of layerNames) {
    const c = childTensors.get(name);
    const x = aTensors.get(name);
    const y = bTensors.get(name);
    if (!c || !x || !y || c.sample.length !== x.sample.length || c.sample.length !== y.sample.length) continue;
    const fromA = inheritedMask(c, x);
    const fromB = inheritedMask(c, y);
    for (let i = 0; i < fromA.length; i++) {
      if (fromA[i] && !fromB[i]) onlyA++;
      else if (fromB[i] && !fromA[i]) onlyB++;
    }
  }
  return { onlyA, onlyB };
}

/** Fewer decisive elements than this, or a ratio below DECISIVE_RATIO, and distance decides instead. */
export const DECISIVE_ELEMENTS = 8;
export const DECISIVE_RATIO = 4;

/** +1 when the evidence clearly favours `a`, −1 for `b`, 0 when it is silent. */
export function exactVerdict({ onlyA, onlyB }: ExactEvidence): number {
  if (Math.max(onlyA, onlyB) < DECISIVE_ELEMENTS) return 0;
  if (onlyA >= DECISIVE_RATIO * (onlyB + 1)) return 1;
  if (onlyB >= DECISIVE_RATIO * (onlyA + 1)) return -1;
  return 0;
}
