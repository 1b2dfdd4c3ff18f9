import type { Fingerprint, TensorFingerprint } from '../fingerprint/fingerprint';
import { isFloating } from '../formats/dtype';

/**
 * Evidence between two checkpoints from their fingerprints alone: which tensors they share,
 * how far apart those are, and whether the two are related at all.
 */
export interface LayerComparison {
  readonly name: string;
  readonly count: number;
  /** ‖a − b‖² (exact for small tensors, estimated from sample and sketch otherwise). */
  readonly squaredDistance: number;
  /** ‖b‖², the denominator of the relative distance. */
  readonly referenceSquared: number;
  /** Cosine between the mean-centred tensors: about 0 for unrelated initialisations. */
  readonly cosine: number;
  /** Sampled elements compared for the cosine and the equality counts. */
  readonly sampled: number;
  /** The whole tensor hashes equal. */
  readonly identical: boolean;
}

export interface Comparison {
  readonly layers: readonly LayerComparison[];
  /** Layers shared by name and shape whose values are unrelated (re-initialised heads). */
  readonly reinitialised: readonly string[];
  /** Tensors with the same name and different shapes (replaced heads), left out. */
  readonly reshaped: readonly { name: string; shapeA: readonly number[]; shapeB: readonly number[] }[];
  /** Fraction of the smaller model's weights lying in related shared layers. */
  readonly relatedFraction: number;
  /** Same lineage: most weights are shared and related. */
  readonly related: boolean;
  /** Standard score of the layer cosines against unrelated models (about N(0,1) for those). */
  readonly relatednessZ: number;
  /** sqrt(Σ‖a − b‖² / Σ‖b‖²) over the related layers; Infinity when unrelated. */
  readonly relativeDistance: number;
}

/** A layer whose centred cosine is below this was re-initialised rather than fine-tuned. */
export const RELATED_LAYER_COSINE = 0.5;
/** Related checkpoints share at least this fraction of the smaller one's weights. */
export const RELATED_FRACTION = 0.5;
/** Tensors smaller than this add nothing reliable to the relatedness score. */
const MIN_INFORMATIVE_ELEMENTS = 64;
/** Buffers that are statistics of data rather than trained weights. */
const BUFFER_NAME = /(^|\.)(running_mean|running_var|num_batches_tracked|position_ids|attn\.bias|attn\.masked_bias)$/;

/**
 * Tensors that are trained weights: floating point, more than one element, not a buffer, and
 * finite (an attention mask of −∞ would swamp every norm it entered).
 */
export function isWeight(tensor: TensorFingerprint): boolean {
  return isFloating(tensor.dtype) && tensor.count > 1 && !BUFFER_NAME.test(tensor.name) && Number.isFinite(tensor.norm);
}

export function weightCount(fingerprint: Fingerprint): number {
  return fingerprint.tensors.reduce((sum, tensor) => sum + (isWeight(tensor) ? tensor.count : 0), 0);
}

export function compareFingerprints(a: Fingerprint, b: Fingerprint): Comparison {
  const byName = new Map(b.tensors.filter(isWeight).map((tensor) => [tensor.name, tensor]));
  const layers: LayerComparison[] = [];
  const reinitialised: string[] = [];
  const reshaped: { name: string; shapeA: readonly number[]; shapeB: readonly number[] }[] = [];
  let relatedCount = 0;
  let zSum = 0;
  let zTerms = 0;
  for (const tensorA of a.tensors) {
    const tensorB = byName.get(tensorA.name);
    if (!tensorB || !isWeight(tensorA)) continue;
    if (!sameShape(tensorA.shape, tensorB.shape)) {
      reshaped.push({ name: tensorA.name, shapeA: tensorA.shape, shapeB: tensorB.shape });
      continue;
    }
    const layer = compareTensors(tensorA, tensorB);
    if (layer.count >= MIN_INFORMATIVE_ELEMENTS) {
      zSum += layer.cosine * Math.sqrt(layer.sampled);
      zTerms++;
    }
    if (layer.cosine >= RELATED_LAYER_COSINE) {
      layers.push(layer);
      relatedCount += layer.count;
    } else {
      reinitialised.push(layer.name);
    }
  }
  const smaller = Math.min(weightCount(a), weightCount(b));
  const relatedFraction = smaller > 0 ? relatedCount / smaller : 0;
  const related = relatedFraction >= RELATED_FRACTION;
  let squared = 0;
  let reference = 0;
  for (const layer of layers) {
    squared += layer.squaredDistance;
    reference += layer.referenceSquared;
  }
  return {
    layers,
    reinitialised,
    reshaped,
    relatedFraction,
    related,
    relatednessZ: zTerms > 0 ? zSum / Math.sqrt(zTerms) : 0,
    relativeDistance: !related ? Infinity : reference > 0 ? Math.sqrt(squared / reference) : 0,
  };
}

export function compareTensors(a: TensorFingerprint, b: TensorFingerprint): LayerComparison {
  const identical = a.hash === b.hash;
  let dot = 0;
  let squaresA = 0;
  let squaresB = 0;
  const sampled = Math.min(a.sample.length, b.sample.length);
  for (let i = 0; i < sampled; i++) {
    const x = a.sample[i]! - a.mean;
    const y = b.sample[i]! - b.mean;
    dot += x * y;
    squaresA += x * x;
    squaresB += y * y;
  }
  return {
    name: a.name,
    count: a.count,
    squaredDistance: identical ? 0 : estimateSquaredDistance(a, b),
    referenceSquared: b.norm * b.norm,
    cosine: identical ? 1 : squaresA > 0 && squaresB > 0 ? dot / Math.sqrt(squaresA * squaresB) : 0,
    sampled,
    identical,
  };
}

/**
 * ‖a − b‖² from the fingerprints. Small tensors are held exactly. For larger ones, the sample
 * and the count sketch give two unbiased estimates with independent errors, combined with
 * weights inverse to their variances: the sample's, (1 − f)/f² · Σ d⁴ over the sampled
 * differences (f the fraction actually sampled); the sketch's, 2/B · (Σ d²)².
 */
export function estimateSquaredDistance(a: TensorFingerprint, b: TensorFingerprint): number {
  const sampled = Math.min(a.sample.length, b.sample.length);
  let squares = 0;
  let fourths = 0;
  for (let i = 0; i < sampled; i++) {
    const d2 = (a.sample[i]! - b.sample[i]!) ** 2;
    squares += d2;
    fourths += d2 * d2;
  }
  if (a.sampleRate >= 1 || sampled === 0) return squares;
  const fraction = sampled / a.count;
  const fromSample = squares / fraction;
  const sampleVariance = ((1 - fraction) / (fraction * fraction)) * fourths;
  let fromSketch = 0;
  for (let i = 0; i < a.sketch.length; i++) fromSketch += (a.sketch[i]! - b.sketch[i]!) ** 2;
  const sketchVariance = (2 / a.sketch.length) * fromSample * fromSample;
  if (sampleVariance === 0 || sketchVariance === 0) return fromSample;
  return (fromSample / sampleVariance + fromSketch / sketchVariance) / (1 / sampleVariance + 1 / sketchVariance);
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((size, i) => size === b[i]);
}
