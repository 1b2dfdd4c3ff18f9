import type { Fingerprint } from '../fingerprint/fingerprint';
import { compareFingerprints, type Comparison } from './compare';
import { adapterFit, adapterTargets } from './adapters';
import { convertedCopy } from './derived';
import { exactEvidence, exactVerdict } from './exactEvidence';

/** One candidate's place in a closed-set parent query. */
export interface RankedCandidate {
  readonly fingerprint: Fingerprint;
  readonly comparison: Comparison;
  /** Head-to-head wins against the other candidates. */
  readonly wins: number;
  /** Higher is better: wins, with the relative distance breaking ties. */
  readonly score: number;
  readonly probability: number;
  /** The candidate holds the child's own weights in another format or layout: the same model. */
  readonly sameWeights: boolean;
}

export interface ParentAnswer {
  /** Best candidate, or undefined when no candidate is related to the child. */
  readonly parent?: RankedCandidate;
  readonly ranking: readonly RankedCandidate[];
}

/**
 * Decides which of two candidates is more likely the child's parent. Exactly inherited
 * values decide when they are clear (a sibling or a grandparent cannot share values with the
 * child that the true parent lacks); otherwise the nearer candidate in weight space wins.
 */
export function preferredParent(child: Fingerprint, a: Fingerprint, compA: Comparison, b: Fingerprint, compB: Comparison): number {
  if (compA.related !== compB.related) return compA.related ? 1 : -1;
  if (!compA.related) return Math.sign(compB.relatedFraction - compA.relatedFraction);
  const shared = new Set(compA.layers.map((layer) => layer.name));
  const verdict = exactVerdict(exactEvidence(child, a, b, compB.layers.map((layer) => layer.name).filter((name) => shared.has(name))));
  if (verdict !== 0) return verdict;
  return Math.sign(compB.relativeDistance - compA.relativeDistance);
}

/**
 * Ranks candidates by a round robin of head-to-head decisions (the paper's closed-set task).
 * A candidate holding the child's very weights under other names (an export, a conversion)
 * is its source and comes first. An adapter's possible parents are the candidates it fits.
 */
export function rankParents(child: Fingerprint, candidates: readonly Fingerprint[]): ParentAnswer {
  const targets = adapterTargets(child);
  if (targets) return rankBases(child, candidates, candidates.map((candidate) => adapterFit(targets, candidate) >= 1));
  const comparisons = candidates.map((candidate) => compareFingerprints(child, candidate));
  const sameWeights = candidates.map((candidate) => convertedCopy(child, candidate) !== undefined);
  const wins = candidates.map(() => 0);
  for (let i = 0; i < candidates.length; i++) {
    for (let j = i + 1; j < candidates.length; j++) {
      const verdict = preferredParent(child, candidates[i]!, comparisons[i]!, candidates[j]!, comparisons[j]!);
      if (verdict > 0) wins[i]!++;
      else if (verdict < 0) wins[j]!++;
    }
  }
  const nearest = Math.min(...comparisons.map((comparison) => comparison.relativeDistance));
  const scores = comparisons.map((comparison, i) =>
    sameWeights[i] ? candidates.length + 1 : comparison.related ? wins[i]! + 1 / (1 + comparison.relativeDistance / Math.max(nearest, 1e-12)) : -Infinity,
  );
  const probabilities = softmax(scores);
  const ranking = candidates
    .map((fingerprint, i): RankedCandidate => ({
      fingerprint,
      comparison: comparisons[i]!,
      wins: wins[i]!,
      score: Number.isFinite(scores[i]!) ? scores[i]! : 0,
      probability: probabilities[i]!,
      sameWeights: sameWeights[i]!,
    }))
    .sort((x, y) => y.score - x.score || x.comparison.relativeDistance - y.comparison.relativeDistance);
  const best = ranking[0];
  return { parent: best && (best.comparison.related || best.sameWeights) ? best : undefined, ranking };
}

/** An adapter's candidates: those it fits share the probability; its factors cannot tell them apart. */
function rankBases(adapter: Fingerprint, candidates: readonly Fingerprint[], fitting: readonly boolean[]): ParentAnswer {
  const count = fitting.filter(Boolean).length;
  const ranking = candidates
    .map((fingerprint, i): RankedCandidate => ({
      fingerprint,
      comparison: compareFingerprints(adapter, fingerprint),
      wins: 0,
      score: fitting[i] ? 1 : 0,
      probability: fitting[i] ? 1 / count : 0,
      sameWeights: false,
    }))
    .sort((x, y) => y.score - x.score);
  return { parent: count > 0 ? ranking[0] : undefined, ranking };
}

/** Softmax over finite scores; unrelated candidates (−Infinity) get probability 0. */
function softmax(scores: readonly number[]): number[] {
  const finite = scores.filter(Number.isFinite);
  if (finite.length === 0) return scores.map(() => 0);
  const top = Math.max(...finite);
  const weights = scores.map((score) => (Number.isFinite(score) ? Math.exp(2 * (score - top)) : 0));
  const total = weights.reduce((sum, weight) => sum + weight, 0);
  return weights.map((weight) => weight / total);
}
