import { throwIfAborted } from '../errors';
import type { FeatureMatrix, FeatureModel } from './featureModel';
import { similarity, type SimilarityMetric } from './metrics';
import type { Probe } from './probe';

/**
 * The learning-free detector of Neural Lineage (Yu & Wang, CVPR 2024): rank candidate parents
 * of a child by how similar their features on one probe are to the child's.
 *
 * Direct: score_i = s(F_i, F_c) with F = g(X; θ), g the network cut before its head.
 * With the fine-tuning approximation the candidate is first moved toward the child along its
 * linearisation, and s is expanded to first order, so no Jacobian is formed:
 *   score_i = s(F_i, F_c) + α · d/dt s(g(X; θ_i + t(θ_c − θ_i)), F_c) at t = 0,
 * the derivative taken by central differences over t = ±ε (two extra forward passes per
 * candidate, no reverse-mode autodiff). θ holds what training moves; BatchNorm running
 * statistics (PyTorch's `running_mean`/`running_var` buffers) are not trained parameters, so
 * along the line they keep the candidate's values, as in the paper, where θ is what gradients
 * reach. Moving them would also make the slope meaningless: the features depend on a running
 * variance through 1/sqrt(var), and a child whose variances grew twentyfold (seen in the zoo)
 * turns a 1% step into a change larger than the whole distance, or a negative variance.
 */

export interface ScoreOptions {
  readonly metric?: SimilarityMetric;
  /** Adds the fine-tuning approximation's term (default true). */
  readonly approximation?: boolean;
  /** Weight of the approximation's term (default DEFAULT_ALPHA). */
  readonly alpha?: number;
  /** Step of the central difference along θ_i → θ_c, as a fraction of the way (default DEFAULT_EPSILON). */
  readonly epsilon?: number;
  readonly signal?: AbortSignal;
}

export interface CandidateScore {
  /** s(F_i, F_c): the score without the approximation. */
  readonly direct: number;
  /** d/dt s(g(X; θ_i + t(θ_c − θ_i)), F_c) at t = 0; only with the approximation. */
  readonly slope?: number;
  /** direct + α·slope with the approximation, else direct. Higher means a more likely parent. */
  readonly score: number;
}

export type ParameterValues = ReadonlyMap<string, Float32Array>;

export const DEFAULT_METRIC: SimilarityMetric = 'l1';
/**
 * α. The first-order term is unbounded: a candidate whose features would change fast toward
 * the child's gains without limit, and unrelated models do (their slope reaches 6× their
 * distance in the zoo, against about 0.9× for true parents). Measured with l1 on the full zoo
 * (seed 0, 85 fine-tune queries, 128-image Fashion-MNIST probe): top-1 56 direct, 57 at
 * α = 0.01 (the paper's safe choice), 58 from 0.02 to 0.05, 59 at 0.1, then 52 at 0.2 and 18
 * at 0.5 as unrelated models win. 0.05 keeps the gain with room below that cliff. The
 * benchmark should choose α on held-out pairs.
 */
export const DEFAULT_ALPHA = 0.05;
/**
 * ε: 1% of the way from candidate to child. Small enough that the central difference is the
 * slope at θ_i (its error shrinks as ε²), large enough that the step survives float32: a
 * fine-tune moves weights by about 1e-2 of their size, so ε times that is still far above
 * float32's 6e-8 relative resolution, in the weights and in the features. On the full zoo,
 * ε of 0.001, 0.01 and 0.1 rank alike for α up to 0.1 (top-1 within one query for every metric).
 */
export const DEFAULT_EPSILON = 0.01;

/** Scores each candidate as the child's parent; the same probe goes through every model. */
export async function scoreCandidates(
  model: FeatureModel,
  probe: Probe,
  child: ParameterValues,
  candidates: readonly ParameterValues[],
  options: ScoreOptions = {},
): Promise<CandidateScore[]> {
  const metric = options.metric ?? DEFAULT_METRIC;
  const approximation = options.approximation ?? true;
  const alpha = options.alpha ?? DEFAULT_ALPHA;
  const epsilon = options.epsilon ?? DEFAULT_EPSILON;
  if (!(epsilon > 0 && epsilon <= 1)) throw new Error(`ε must lie in (0, 1], not ${epsilon}`);
  if (!Number.isFinite(alpha)) throw new Error(`α must be a finite number, not ${alpha}`);
  checkParameters(model, child, 'the child');
  candidates.forEach((candidate, i) => checkParameters(model, candidate, `candidate ${i + 1}`));
  const features = (parameters: ParameterValues) => model.features(probe.values, probe.rows, parameters, options.signal);
  const childFeatures = await features(child);
  const scratch = approximation ? { forward: allocateFor(model), backward: allocateFor(model) } : undefined;
  const scores: CandidateScore[] = [];
  for (const candidate of candidates) {
    throwIfAborted(options.signal);
    const direct = similarity(metric, await features(candidate), childFeatures);
    if (!scratch) {
      scores.push({ direct, score: direct });
      continue;
    }
    const along = (step: number, target: Map<string, Float32Array>): Promise<FeatureMatrix> => features(interpolate(model, candidate, child, step, target));
    const ahead = similarity(metric, await along(epsilon, scratch.forward), childFeatures);
    const behind = similarity(metric, await along(-epsilon, scratch.backward), childFeatures);
    const slope = (ahead - behind) / (2 * epsilon);
    scores.push({ direct, slope, score: direct + alpha * slope });
  }
  return scores;
}

function checkParameters(model: FeatureModel, values: ParameterValues, who: string): void {
  for (const [name, shape] of model.parameters) {
    const expected = shape.reduce((total, size) => total * size, 1);
    const value = values.get(name);
    if (!value) throw new Error(`${who} has no values for parameter ${name} of ${model.description}`);
    if (value.length !== expected) throw new Error(`${who}: parameter ${name} has ${value.length} values; ${model.description} needs ${expected}`);
  }
}

function allocateFor(model: FeatureModel): Map<string, Float32Array> {
  return new Map([...model.parameters].map(([name, shape]) => [name, new Float32Array(shape.reduce((total, size) => total * size, 1))]));
}

const RUNNING_STATISTIC = /(^|\.)running_(mean|var)$/;

/** θ_from + t(θ_to − θ_from), written into `target`; running statistics stay at θ_from's. */
function interpolate(model: FeatureModel, from: ParameterValues, to: ParameterValues, t: number, target: Map<string, Float32Array>): Map<string, Float32Array> {
  for (const [name, out] of target) {
    const start = from.get(name)!;
    if (RUNNING_STATISTIC.test(name) || model.runningStatistics?.has(name)) {
      out.set(start);
      continue;
    }
    const end = to.get(name)!;
    for (let i = 0; i < out.length; i++) out[i] = start[i]! + t * (end[i]! - start[i]!);
  }
  return target;
}
