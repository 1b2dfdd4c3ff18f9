import { readFile } from 'node:fs/promises';
import type * as Ort from 'onnxruntime-node';
import type { FeatureMatrix } from '../repr/featureModel';
import { DETECTOR_CHANNELS, buildFeatureToken, buildWeightTokens, type MatrixPair } from './detectorInputs';

/**
 * The learned lineage detector (Neural Lineage, approach 2; docs/method.md §3) at inference.
 * The ONNX graph scores one candidate parent from its tokens (detectorInputs.ts); the softmax
 * across candidates and the learned "no parent" logit, which training applied over a whole
 * candidate set, are applied here, so any number of candidates and of weight matrices works.
 * Trained and exported by test/zoo/train_detector.py; the JSON next to the graph records the
 * token layout and the training run.
 */

/** One candidate parent of a child: the feature extractor's weight matrices and the probe features of both. */
export interface DetectorCandidate {
  readonly weights: readonly MatrixPair[];
  readonly features: { readonly parent: FeatureMatrix; readonly child: FeatureMatrix };
}

export interface DetectorScores {
  /** Per candidate, in the order given: the probability that it is the child's parent (nearest ancestor). */
  readonly probabilities: number[];
  /** Probability that no candidate is an ancestor of the child; probabilities and noParent sum to 1. */
  readonly noParent: number;
  /** The graph's raw score per candidate (the logits of the softmax). */
  readonly scores: number[];
}

export interface LineageDetector {
  /** E.g. "learned lineage detector (onnxruntime cpu)". */
  readonly description: string;
  /** Rows of the probe the features should be computed on, as in training. */
  readonly probeRows: number;
  score(candidates: readonly DetectorCandidate[]): Promise<DetectorScores>;
  dispose(): Promise<void>;
}

export interface DetectorOptions {
  /** onnxruntime execution providers to try in order; the CPU by default. */
  readonly executionProviders?: readonly string[];
}

/** The parts of lineageDetector.json that inference needs. */
interface DetectorRecord {
  readonly tokenSize: number;
  readonly probeRows: number;
  readonly weightTokensInput: string;
  readonly featureTokenInput: string;
  readonly output: string;
  readonly noParentLogit: number;
}

const FORMAT = 'neural-lineage-detector';
const VERSION = 1;
/** Bounds tokenSize and probeRows read from the record (a token of size n holds 3n² floats). */
const LARGEST_COUNT = 1024;

function parseRecord(jsonPath: string, text: string): DetectorRecord {
  const fail = (problem: string): never => {
    throw new Error(`${jsonPath}: ${problem}`);
  };
  let record: unknown;
  try {
    record = JSON.parse(text);
  } catch (error) {
    return fail(`not JSON: ${(error as Error).message}`);
  }
  if (typeof record !== 'object' || record === null) return fail('not a JSON object');
  const field = (name: string): unknown => (record as Record<string, unknown>)[name];
  const nameIn = (value: unknown, name: string): string => (typeof value === 'string' && value !== '' ? value : fail(`${name} is not a name`));
  const count = (name: string): number => {
    const value = field(name);
    return Number.isSafeInteger(value) && (value as number) >= 1 && (value as number) <= LARGEST_COUNT ? (value as number) : fail(`${name} is not a count`);
  };
  if (field('format') !== FORMAT || field('version') !== VERSION) return fail(`not a ${FORMAT} version ${VERSION} record`);
  const channels = field('channels');
  if (!Array.isArray(channels) || channels.join('|') !== DETECTOR_CHANNELS.join('|')) {
    return fail(`the detector was trained on channels ${JSON.stringify(channels)}, but tokens are built with ${JSON.stringify(DETECTOR_CHANNELS)}`);
  }
  const inputs = field('inputs');
  if (typeof inputs !== 'object' || inputs === null) return fail('inputs missing');
  const noParentLogit = field('noParentLogit');
  if (typeof noParentLogit !== 'number' || !Number.isFinite(noParentLogit)) return fail('noParentLogit is not a finite number');
  return {
    tokenSize: count('tokenSize'),
    probeRows: count('probeRows'),
    weightTokensInput: nameIn((inputs as Record<string, unknown>)['weightTokens'], 'inputs.weightTokens'),
    featureTokenInput: nameIn((inputs as Record<string, unknown>)['featureToken'], 'inputs.featureToken'),
    output: nameIn(field('output'), 'output'),
    noParentLogit,
  };
}

/** Softmax over the candidates' scores and the no-parent logit, shifted by the maximum for stability. */
function probabilitiesOf(scores: readonly number[], noParentLogit: number): { probabilities: number[]; noParent: number } {
  const top = Math.max(noParentLogit, ...scores);
  const exponentials = scores.map((score) => Math.exp(score - top));
  const noParentExponential = Math.exp(noParentLogit - top);
  const total = exponentials.reduce((sum, value) => sum + value, noParentExponential);
  return { probabilities: exponentials.map((value) => value / total), noParent: noParentExponential / total };
}

export async function loadDetector(onnxPath: string, jsonPath: string, options: DetectorOptions = {}): Promise<LineageDetector> {
  const record = parseRecord(jsonPath, await readFile(jsonPath, 'utf8'));
  // Required lazily: the native module loads only when the detector is used, and stays outside
  // the esbuild bundles (esbuild.js lists it as external).
  const ort = require('onnxruntime-node') as typeof Ort;
  const providers = [...(options.executionProviders ?? ['cpu'])];
  const session = await ort.InferenceSession.create(onnxPath, { executionProviders: providers });
  for (const name of [record.weightTokensInput, record.featureTokenInput]) {
    if (!session.inputNames.includes(name)) throw new Error(`${onnxPath}: the graph has no input ${name} (it has ${session.inputNames.join(', ')})`);
  }
  if (!session.outputNames.includes(record.output)) throw new Error(`${onnxPath}: the graph has no output ${record.output}`);
  const size = record.tokenSize;
  const channels = DETECTOR_CHANNELS.length;

  async function scoreOne(candidate: DetectorCandidate, index: number): Promise<number> {
    if (candidate.weights.length === 0) throw new RangeError(`candidate ${index} has no weight matrices`);
    const weightTokens = buildWeightTokens(candidate.weights, size);
    const featureToken = buildFeatureToken(candidate.features.parent, candidate.features.child, size);
    const outputs = await session.run({
      [record.weightTokensInput]: new ort.Tensor('float32', weightTokens, [1, candidate.weights.length, channels, size, size]),
      [record.featureTokenInput]: new ort.Tensor('float32', featureToken, [1, channels, size, size]),
    });
    const score = outputs[record.output]?.data[0];
    if (typeof score !== 'number') throw new Error(`${onnxPath}: output ${record.output} is not a float score`);
    return score;
  }

  return {
    description: `learned lineage detector (onnxruntime ${providers.join(', ')})`,
    probeRows: record.probeRows,
    async score(candidates) {
      const scores: number[] = [];
      // One run at a time: the session is shared and each run already uses the provider's threads.
      for (const [index, candidate] of candidates.entries()) scores.push(await scoreOne(candidate, index));
      return { ...probabilitiesOf(scores, record.noParentLogit), scores };
    },
    async dispose() {
      await session.release();
    },
  };
}
