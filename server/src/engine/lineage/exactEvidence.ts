import type { Fingerprint, TensorFingerprint } from '../fingerprint/fingerprint';

/**
 * Weights that get no gradient while fine-tuning (inputs that are always zero, dead units,
 * frozen layers) keep their parent's exact values. So a child shares exactly equal values
 * with its true parent that a sibling, which trained those weights itself, does not have.
 * Counted on the fingerprints' samples, which sit at the same positions in every file.
 */
export interface ExactEvidence {
  /** Sampled elements where the child equals `a` but not `b`. */
  readonly onlyA: number;
  /** Sampled elements where the child equals `b` but not `a`. */
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

export function exactEvidence(child: Fingerprint, a: Fingerprint, b: Fingerprint, layerNames: Iterable<string>): ExactEvidence {
  const childTensors = tensorsByName(child);
  const aTensors = tensorsByName(a);
  const bTensors = tensorsByName(b);
  let onlyA = 0;
  let onlyB = 0;
  for (const name of layerNames) {
    const c = childTensors.get(name)?.sample;
    const x = aTensors.get(name)?.sample;
    const y = bTensors.get(name)?.sample;
    if (!c || !x || !y || c.length !== x.length || c.length !== y.length) continue;
    for (let i = 0; i < c.length; i++) {
      const equalA = c[i] === x[i];
      const equalB = c[i] === y[i];
      if (equalA && !equalB) onlyA++;
      else if (equalB && !equalA) onlyB++;
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
