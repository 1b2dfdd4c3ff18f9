import type { Fingerprint, TensorFingerprint } from '../fingerprint/fingerprint';
import { isWeight, sameShape, weightCount, type Comparison } from './compare';
import { tensorsByName } from './exactEvidence';

/** Kinds of edge in a lineage graph. */
export type Relation = 'finetune' | 'run' | 'adapter' | 'quantized' | 'fp16' | 'pruned' | 'converted' | 'merged' | 'unknown';

/** How each relation reads before the parent's name ("fine-tuned from base.pt"). */
export const RELATION_WORDS: Readonly<Record<Relation, string>> = {
  finetune: 'fine-tuned from',
  run: 'later checkpoint of the run of',
  adapter: 'adapter on',
  quantized: 'quantized copy of',
  fp16: '16-bit copy of',
  pruned: 'pruned copy of',
  converted: 'same weights as',
  merged: 'merged from',
  unknown: 'derived from',
};

/** A copy derived from another checkpoint without training: a leaf, never a parent of its source. */
export interface DerivedCopy {
  readonly relation: Extract<Relation, 'converted' | 'fp16' | 'pruned' | 'quantized'>;
  /** True when `a` is the source and `b` the copy. */
  readonly aIsSource: boolean;
  readonly evidence: string;
}

/** Share of compared elements that must match for a copy to count as derived. */
const MATCHING = 0.99;
/** A pruned copy zeroes at least this share of the weights its source had non-zero. */
const PRUNED_EXTRA_ZEROS = 0.05;

/** Recognises identical weights, float16/bfloat16 copies and pruned copies. */
export function derivedCopy(a: Fingerprint, b: Fingerprint, comparison: Comparison): DerivedCopy | undefined {
  if (!comparison.related || comparison.layers.length === 0) return undefined;
  if (comparison.reinitialised.length === 0 && comparison.reshaped.length === 0 && comparison.layers.every((layer) => layer.identical)) {
    return { relation: 'converted', aIsSource: originalFirst(a, b)[0] === a, evidence: `all ${comparison.layers.length} shared tensors are identical` };
  }
  const names = comparison.layers.map((layer) => layer.name);
  const half = halfPrecisionCopy(a, b, names) ?? invert(halfPrecisionCopy(b, a, names));
  if (half) return half;
  return prunedCopy(a, b, names) ?? invert(prunedCopy(b, a, names));
}

/**
 * Share of weight values that must lie in tensors with an identical value multiset for two
 * files to be one model in two layouts. Exporters may fold some layers (an ONNX export folds
 * batch norm into the convolution before it), so not quite all.
 */
const CONVERTED_CONTENT = 0.9;

/**
 * The same weights under other names and layouts (a Keras kernel is the transpose of the
 * PyTorch one; ONNX renames tensors): tensors are matched by their order-blind content hash.
 * Tensors holding one repeated value (zero biases, unit norms) match anything and are left out.
 * A tensor whose name and shape the other file also has, with other values, was trained (a
 * fine-tune with frozen layers shares most of its values with its parent), so it rules a
 * conversion out.
 */
export function convertedCopy(a: Fingerprint, b: Fingerprint): DerivedCopy | undefined {
  const informative = (fingerprint: Fingerprint) => fingerprint.tensors.filter((tensor) => isWeight(tensor) && tensor.variance > 0);
  const remaining = new Map<string, number>();
  for (const tensor of informative(b)) remaining.set(contentKey(tensor), (remaining.get(contentKey(tensor)) ?? 0) + 1);
  const namedInB = tensorsByName(b);
  let matched = 0;
  for (const tensor of informative(a)) {
    const key = contentKey(tensor);
    const left = remaining.get(key) ?? 0;
    if (left > 0) {
      remaining.set(key, left - 1);
      matched += tensor.count;
      continue;
    }
    const namesake = namedInB.get(tensor.name);
    if (namesake && sameShape(namesake.shape, tensor.shape)) return undefined;
  }
  const smaller = Math.min(weightCount(a), weightCount(b));
  const larger = Math.max(weightCount(a), weightCount(b));
  if (smaller === 0 || matched < CONVERTED_CONTENT * smaller || matched < 0.5 * larger) return undefined;
  const [source, copy] = originalFirst(a, b);
  return {
    relation: 'converted',
    aIsSource: source === a,
    evidence: `the same values in ${(100 * matched / smaller).toFixed(0)}% of the weights (${copy.format} copy of a ${source.format} file)`,
  };
}

/** Of two files with the same weights, the one named the original first. */
function originalFirst(a: Fingerprint, b: Fingerprint): [Fingerprint, Fingerprint] {
  return FORMAT_PRECEDENCE.indexOf(a.format) <= FORMAT_PRECEDENCE.indexOf(b.format) ? [a, b] : [b, a];
}

function contentKey(tensor: TensorFingerprint): string {
  return `${tensor.count}:${tensor.contentHash}`;
}

/**
 * Which of two files holding the same weights is named the original: training frameworks
 * write checkpoints first and exports come from them.
 */
const FORMAT_PRECEDENCE: readonly string[] = [
  'pytorch-zip', 'safetensors', 'pytorch-tar', 'pytorch-pickle', 'npz', 'npy', 'keras', 'keras-h5', 'tfjs', 'onnx', 'tflite', 'gguf',
];

/**
 * Some of a checkpoint's weights are stored as quantized codes (GGUF blocks, int8 with
 * scales). Quantizers keep some tensors in float (norms, rows too short for a block), and
 * nobody trains in quantized codes: such a file is a copy of a precise model.
 */
export function isQuantized(fingerprint: Fingerprint): boolean {
  return fingerprint.tensors.some((tensor) => isWeight(tensor) && tensor.quantization !== undefined);
}

/** `copy`, stored quantized, is a copy of `source`, its nearest unquantized relative. */
export function quantizedCopy(source: Fingerprint, copy: Fingerprint, comparison: Comparison): DerivedCopy {
  const schemes = [...new Set(copy.tensors.flatMap((tensor) => (tensor.quantization ? [tensor.quantization] : [])))];
  return {
    relation: 'quantized',
    aIsSource: true,
    evidence: `${schemes.join(', ')} copy: relative difference ${comparison.relativeDistance.toPrecision(2)} from ${source.format} weights, the nearest unquantized relative`,
  };
}

function invert(copy: DerivedCopy | undefined): DerivedCopy | undefined {
  return copy && { ...copy, aIsSource: !copy.aIsSource };
}

/** `copy` holds 16-bit floats that equal `source`'s values rounded to that precision. */
function halfPrecisionCopy(source: Fingerprint, copy: Fingerprint, names: readonly string[]): DerivedCopy | undefined {
  const sourceTensors = tensorsByName(source);
  const copyTensors = tensorsByName(copy);
  let compared = 0;
  let matching = 0;
  let format: 'F16' | 'BF16' | undefined;
  for (const name of names) {
    const s = sourceTensors.get(name)!;
    const c = copyTensors.get(name)!;
    if (c.dtype !== 'F16' && c.dtype !== 'BF16') continue;
    if (s.dtype === 'F16' || s.dtype === 'BF16') return undefined;
    format = c.dtype;
    const round = c.dtype === 'F16' ? roundToHalf : roundToBfloat16;
    for (let i = 0; i < Math.min(s.sample.length, c.sample.length); i++, compared++) {
      if (round(s.sample[i]!) === c.sample[i]) matching++;
    }
  }
  if (!format || compared === 0 || matching / compared < MATCHING) return undefined;
  return {
    relation: 'fp16',
    aIsSource: true,
    evidence: `${format} copy: ${(100 * matching / compared).toFixed(1)}% of sampled values equal the source rounded to ${format}`,
  };
}

/** `copy` equals `source` except for extra zeros. */
function prunedCopy(source: Fingerprint, copy: Fingerprint, names: readonly string[]): DerivedCopy | undefined {
  const sourceTensors = tensorsByName(source);
  const copyTensors = tensorsByName(copy);
  let weights = 0;
  let extraZeros = 0;
  let kept = 0;
  let keptEqual = 0;
  for (const name of names) {
    const s = sourceTensors.get(name)!;
    const c = copyTensors.get(name)!;
    weights += s.count;
    extraZeros += c.zeros - s.zeros;
    for (let i = 0; i < Math.min(s.sample.length, c.sample.length); i++) {
      if (c.sample[i] === 0) continue;
      kept++;
      if (c.sample[i] === s.sample[i]) keptEqual++;
    }
  }
  if (weights === 0 || extraZeros / weights < PRUNED_EXTRA_ZEROS || kept === 0 || keptEqual / kept < MATCHING) return undefined;
  return {
    relation: 'pruned',
    aIsSource: true,
    evidence: `pruned copy: ${(100 * extraZeros / weights).toFixed(1)}% more zeros, the other values unchanged`,
  };
}

const scratch = new DataView(new ArrayBuffer(4));

/** Rounds a float32 value to the nearest IEEE half (ties to even) and back. */
export function roundToHalf(value: number): number {
  if (!Number.isFinite(value) || value === 0) return value;
  const magnitude = Math.abs(value);
  if (magnitude >= 65520) return Math.sign(value) * Infinity;
  // Below 2^-14 halves are subnormal with a fixed step of 2^-24.
  const exponent = Math.max(Math.floor(Math.log2(magnitude)), -14);
  const step = 2 ** (exponent - 10);
  let rounded = Math.round(magnitude / step);
  if (Math.abs(magnitude / step - Math.trunc(magnitude / step) - 0.5) < 1e-12 && rounded % 2 === 1) rounded--;
  return Math.sign(value) * rounded * step;
}

/** Rounds a float32 value to bfloat16 (ties to even) and back. */
export function roundToBfloat16(value: number): number {
  scratch.setFloat32(0, value);
  const bits = scratch.getUint32(0);
  const rounded = (bits + 0x7fff + ((bits >>> 16) & 1)) & 0xffff0000;
  scratch.setUint32(0, rounded >>> 0);
  return scratch.getFloat32(0);
}
