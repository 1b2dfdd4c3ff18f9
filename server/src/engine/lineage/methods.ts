import { SIMILARITY_METRICS, type SimilarityMetric } from '../repr/metrics';

/**
 * Every way the tool can answer "which candidate is CHILD's parent?":
 * - `weights`: the fingerprint round robin (inherited values, then weight distance; an exact
 *   pass over the files when the two best are too close);
 * - `repr-<metric>` and `repr-<metric>-approx`: the paper's learning-free detection, features of
 *   one probe compared directly or with the fine-tuning approximation;
 * - `detector`: the paper's learned detector (shipped weights, onnxruntime);
 * - `auto`: weights when they can compare the candidates, and the learned detector, then l1
 *   with the approximation, for children whose weights the candidates do not share by name.
 */
export type ParentMethod = 'weights' | `repr-${SimilarityMetric}` | `repr-${SimilarityMetric}-approx` | 'detector' | 'auto';

export const PARENT_METHODS: readonly ParentMethod[] = [
  'auto',
  'weights',
  ...SIMILARITY_METRICS.flatMap((metric): ParentMethod[] => [`repr-${metric}`, `repr-${metric}-approx`]),
  'detector',
];

export function isParentMethod(value: string): value is ParentMethod {
  return (PARENT_METHODS as readonly string[]).includes(value);
}
