import { existsSync } from 'node:fs';
import * as path from 'node:path';
import type { DevicePreference } from '../compute/tfjsBackend';
import { loadDetector, type DetectorCandidate } from '../detector/detector';
import type { MatrixPair } from '../detector/detectorInputs';
import { describeError, throwIfAborted } from '../errors';
import type { Fingerprint } from '../fingerprint/fingerprint';
import type { Checkpoint } from '../formats/checkpoint';
import { openCheckpoint } from '../formats/index';
import { recogniseArchitecture } from '../repr/architecture';
import { inPytorchLayout } from '../repr/kerasLayout';
import type { FeatureModel } from '../repr/featureModel';
import { SIMILARITY_METRICS, type SimilarityMetric } from '../repr/metrics';
import type { ParentMethod } from './methods';
import { openOnnxFeatureModel } from '../repr/onnxFeatureModel';
import { probeFor } from '../repr/probe';
import { DEFAULT_ALPHA, scoreCandidates } from '../repr/representation';
import { openKerasFeatureModel } from '../repr/kerasFeatureModel';
import { outputsFirstMatrix, parametersFor } from '../repr/parameterMatching';
import { openStateDictFeatureModel } from '../repr/stateDictModel';
import { rankParentsSettled } from './exactPass';

export interface ParentQueryOptions {
  readonly method?: ParentMethod;
  /** Probe inputs for the representation methods: a .npy/.npz array or a folder of images. */
  readonly probe?: string;
  /** Weight of the fine-tuning approximation's term. */
  readonly alpha?: number;
  readonly device?: DevicePreference;
  readonly signal?: AbortSignal;
}

export interface RankedParent {
  readonly candidate: string;
  /** The method's own score: higher is a more likely parent. */
  readonly score: number;
  /** Share of belief among the candidates (and "no parent" for the detector). */
  readonly probability: number;
  /** The candidate's weights are related to the child's (weights method). */
  readonly related: boolean;
  readonly relativeDistance: number | null;
}

export interface ParentQueryAnswer {
  readonly parent: string | null;
  readonly ranking: readonly RankedParent[];
  /** The method that produced the answer (auto names the one it used). */
  readonly method: ParentMethod;
  /** How the answer was computed: device, model, probe. */
  readonly details: string;
  readonly exactPass: boolean;
  /** Probability that none of the candidates is the parent, where the method estimates it. */
  readonly noParent?: number;
}

/** Ranks `candidates` as parents of `child` with the chosen method. */
export async function findParent(child: Fingerprint, candidates: readonly Fingerprint[], options: ParentQueryOptions = {}): Promise<ParentQueryAnswer> {
  const method = options.method ?? 'auto';
  if (method === 'weights') return byWeights(child, candidates, options.signal);
  if (method === 'auto') {
    const weights = await byWeights(child, candidates, options.signal);
    if (weights.parent !== null) return { ...weights, method: 'weights', details: `auto: ${weights.details}` };
    const fallback = await byRepresentation(child, candidates, { ...options, method: 'detector' }).catch(() =>
      byRepresentation(child, candidates, { ...options, method: 'repr-l1-approx' }),
    );
    return { ...fallback, details: `auto (no candidate shares the child's weights by name): ${fallback.details}` };
  }
  return byRepresentation(child, candidates, { ...options, method });
}

async function byWeights(child: Fingerprint, candidates: readonly Fingerprint[], signal?: AbortSignal): Promise<ParentQueryAnswer> {
  const answer = await rankParentsSettled(child, candidates, signal);
  return {
    parent: answer.parent?.fingerprint.path ?? null,
    ranking: answer.ranking.map((entry) => ({
      candidate: entry.fingerprint.path,
      score: entry.score,
      probability: entry.probability,
      related: entry.comparison.related || entry.sameWeights,
      relativeDistance: entry.sameWeights ? 0 : Number.isFinite(entry.comparison.relativeDistance) ? entry.comparison.relativeDistance : null,
    })),
    method: 'weights',
    details: 'weight fingerprints',
    exactPass: answer.exactPass,
  };
}

/**
 * The shipped detector: beside the bundles (esbuild.js copies it to dist/), or in the sources
 * when this module runs compiled by tsc under out/server/src/engine/lineage.
 */
export function detectorFiles(): { onnx: string; json: string } {
  const places = [__dirname, path.resolve(__dirname, '..', '..', '..', '..', '..', 'server', 'src', 'engine', 'detector')];
  const place = places.find((folder) => existsSync(path.join(folder, 'lineageDetector.onnx'))) ?? places[0]!;
  return { onnx: path.join(place, 'lineageDetector.onnx'), json: path.join(place, 'lineageDetector.json') };
}

/** Weights that overflow or a negative BatchNorm variance make NaN or infinite features, which no score can rank. */
const NOT_FINITE = 'its features on the probe are not all finite numbers';

/** The representation methods and the detector: forward passes of the child's architecture. */
async function byRepresentation(
  child: Fingerprint,
  candidates: readonly Fingerprint[],
  options: ParentQueryOptions & { method: Exclude<ParentMethod, 'weights' | 'auto'> },
): Promise<ParentQueryAnswer> {
  const childCheckpoint = await openCheckpoint(child.path);
  let model: FeatureModel | undefined;
  try {
    model = await featureModelFor(childCheckpoint, options.device);
    const detector = options.method === 'detector' ? await loadDetector(detectorFiles().onnx, detectorFiles().json) : undefined;
    try {
      const probe = await probeFor(model.inputShape, options.probe, detector ? { rows: detector.probeRows } : {});
      const childValues = await parametersFor(childCheckpoint, model, options.signal);
      const usable: { index: number; values: Map<string, Float32Array> }[] = [];
      const unusable: { index: number; why: string }[] = [];
      for (const [index, candidate] of candidates.entries()) {
        throwIfAborted(options.signal);
        try {
          const checkpoint = await openCheckpoint(candidate.path);
          try {
            usable.push({ index, values: await parametersFor(checkpoint, model, options.signal) });
          } finally {
            await checkpoint.close();
          }
        } catch (error) {
          unusable.push({ index, why: describeError(error) });
        }
      }
      const scores = new Array<number>(candidates.length).fill(-Infinity);
      let probabilities: number[];
      let noParent: number | undefined;
      if (detector) {
        const childFeatures = await model.features(probe.values, probe.rows, childValues, options.signal);
        if (!childFeatures.values.every(Number.isFinite)) throw new Error(`${child.path}: ${NOT_FINITE} under its own weights`);
        const inputs: DetectorCandidate[] = [];
        const scored: number[] = [];
        for (const { index, values } of usable) {
          const features = await model.features(probe.values, probe.rows, values, options.signal);
          if (!features.values.every(Number.isFinite)) {
            unusable.push({ index, why: NOT_FINITE });
            continue;
          }
          inputs.push({ weights: matrixPairs(model, values, childValues), features: { parent: features, child: childFeatures } });
          scored.push(index);
        }
        const result = await detector.score(inputs);
        probabilities = candidates.map(() => 0);
        scored.forEach((index, k) => {
          scores[index] = result.scores[k]!;
          probabilities[index] = result.probabilities[k]!;
        });
        noParent = result.noParent;
      } else {
        const { metric, approximation } = parseRepresentationMethod(options.method);
        const results = await scoreCandidates(model, probe, childValues, usable.map(({ values }) => values), {
          metric,
          approximation,
          alpha: options.alpha ?? DEFAULT_ALPHA,
          signal: options.signal,
        });
        usable.forEach(({ index }, k) => {
          if (Number.isFinite(results[k]!.score)) scores[index] = results[k]!.score;
          else unusable.push({ index, why: NOT_FINITE });
        });
        probabilities = relativeConfidence(scores);
      }
      const ranking = candidates
        .map((candidate, i): RankedParent => ({ candidate: candidate.path, score: Number.isFinite(scores[i]!) ? scores[i]! : 0, probability: probabilities[i]!, related: Number.isFinite(scores[i]!), relativeDistance: null }))
        .sort((a, b) => (b.related ? b.score : -Infinity) - (a.related ? a.score : -Infinity));
      const best = ranking[0];
      const parent = best?.related && (noParent === undefined || best.probability >= noParent) ? best.candidate : null;
      const skipped = unusable.map(({ index, why }) => `${candidates[index]!.path} left out: ${why}`);
      return {
        parent,
        ranking,
        method: options.method,
        details: [`${model.description} on ${model.device}, probe ${probe.source}`, detector?.description, ...skipped].filter(Boolean).join('; '),
        exactPass: false,
        ...(noParent === undefined ? {} : { noParent }),
      };
    } finally {
      await detector?.dispose();
    }
  } finally {
    await model?.dispose();
    await childCheckpoint.close();
  }
}

/**
 * The model the child's checkpoint runs as: an ONNX graph, a Keras/TF.js layers model from its
 * saved configuration, or a recognised state-dict architecture (Keras and TF.js weights without a
 * configuration seen with PyTorch's names and layouts).
 */
async function featureModelFor(checkpoint: Checkpoint, device: DevicePreference | undefined): Promise<FeatureModel> {
  if (checkpoint.format === 'onnx') return openOnnxFeatureModel(checkpoint.path, { device });
  const keras = await openKerasFeatureModel(checkpoint, { device });
  if (keras) return keras;
  const recognition = recogniseArchitecture(inPytorchLayout(checkpoint).tensors);
  if ('reason' in recognition) throw new Error(`${checkpoint.path}: only weight-space methods apply (${recognition.reason})`);
  return openStateDictFeatureModel(recognition.architecture, { device });
}

export function parseRepresentationMethod(method: string): { metric: SimilarityMetric; approximation: boolean } {
  const match = /^repr-([a-z0-9]+)(-approx)?$/.exec(method);
  const metric = match?.[1] as SimilarityMetric | undefined;
  if (!metric || !SIMILARITY_METRICS.includes(metric)) throw new Error(`unknown representation method ${method}`);
  return { metric, approximation: match![2] !== undefined };
}

/** The feature extractor's matrices of a candidate and the child, for the detector's weight tokens. */
export function matrixPairs(model: FeatureModel, parent: ReadonlyMap<string, Float32Array>, child: ReadonlyMap<string, Float32Array>): MatrixPair[] {
  const pairs: MatrixPair[] = [];
  for (const [name, shape] of model.parameters) {
    if (shape.length < 2 || /running_(mean|var)$/.test(name)) continue;
    const parentMatrix = outputsFirstMatrix(model, name, parent.get(name)!);
    pairs.push({ parent: parentMatrix.values, child: outputsFirstMatrix(model, name, child.get(name)!).values, rows: parentMatrix.rows, columns: parentMatrix.columns });
  }
  return pairs;
}

/**
 * Similarity scores have no common scale across models, so the share shown for each candidate
 * is a softmax of its score in units of the scores' spread: a relative confidence, not a
 * calibrated probability.
 */
function relativeConfidence(scores: readonly number[]): number[] {
  const finite = scores.filter(Number.isFinite);
  if (finite.length === 0) return scores.map(() => 0);
  const top = Math.max(...finite);
  const mean = finite.reduce((sum, score) => sum + score, 0) / finite.length;
  const spread = Math.sqrt(finite.reduce((sum, score) => sum + (score - mean) ** 2, 0) / finite.length) || 1;
  const weights = scores.map((score) => (Number.isFinite(score) ? Math.exp((score - top) / spread) : 0));
  const total = weights.reduce((sum, weight) => sum + weight, 0);
  return weights.map((weight) => weight / total);
}
