import { throwIfAborted } from '../errors';
import type { Fingerprint } from '../fingerprint/fingerprint';
import { normalisedNames } from '../fingerprint/tensorNames';
import { openCheckpoint } from '../formats/index';
import type { Tensor } from '../formats/tensor';
import { exactEvidence, exactVerdict, tensorsByName } from './exactEvidence';
import { rankParents, type ParentAnswer, type RankedCandidate } from './parent';

/**
 * Fingerprints estimate distances of large tensors from a sample and a sketch. When the two
 * best candidates are closer than that estimate can tell apart, both are compared with the
 * child exactly, streaming the three files tensor by tensor (memory stays at a few chunks).
 */

/** Two estimated distances closer than this (relative) are too close to call from fingerprints. */
export const AMBIGUOUS_DISTANCE = 0.05;

export async function rankParentsSettled(child: Fingerprint, candidates: readonly Fingerprint[], signal?: AbortSignal): Promise<ParentAnswer & { exactPass: boolean }> {
  const answer = rankParents(child, candidates);
  const [first, second] = answer.ranking;
  if (!first || !second || !ambiguous(child, first, second)) return { ...answer, exactPass: false };
  const [distanceFirst, distanceSecond] = await Promise.all([exactRelativeDistance(child, first, signal), exactRelativeDistance(child, second, signal)]);
  if (distanceSecond >= distanceFirst) return { ...answer, exactPass: true };
  const ranking = [second, first, ...answer.ranking.slice(2)];
  return { parent: second, ranking, exactPass: true };
}

/**
 * Both related, exactly inherited values silent between them (so distance decided), and
 * distances that were estimated (not exact) and either within AMBIGUOUS_DISTANCE of each other
 * or ordered the other way by the sample alone or the sketch alone (the two estimates
 * disagree, so neither can be trusted).
 */
function ambiguous(child: Fingerprint, first: RankedCandidate, second: RankedCandidate): boolean {
  if (!first.comparison.related || !second.comparison.related) return false;
  if (!child.tensors.some((tensor) => tensor.sampleRate < 1)) return false;
  const shared = new Set(first.comparison.layers.map((layer) => layer.name));
  const layers = second.comparison.layers.map((layer) => layer.name).filter((name) => shared.has(name));
  if (exactVerdict(exactEvidence(child, first.fingerprint, second.fingerprint, layers)) !== 0) return false;
  const a = first.comparison.relativeDistance;
  const b = second.comparison.relativeDistance;
  if (Math.abs(a - b) <= AMBIGUOUS_DISTANCE * Math.max(a, b)) return true;
  const x = separateEstimates(child, first);
  const y = separateEstimates(child, second);
  return x.sample > y.sample || x.sketch > y.sketch;
}

/** ‖child − candidate‖² from the sample alone and from the sketch alone. */
function separateEstimates(child: Fingerprint, candidate: RankedCandidate): { sample: number; sketch: number } {
  const childTensors = tensorsByName(child);
  const candidateTensors = tensorsByName(candidate.fingerprint);
  let sample = 0;
  let sketch = 0;
  for (const layer of candidate.comparison.layers) {
    const a = childTensors.get(layer.name);
    const b = candidateTensors.get(layer.name);
    if (!a || !b) continue;
    let sampled = 0;
    for (let i = 0; i < Math.min(a.sample.length, b.sample.length); i++) sampled += (a.sample[i]! - b.sample[i]!) ** 2;
    sample += a.sampleRate >= 1 ? sampled : sampled / (a.sample.length / a.count);
    if (a.sampleRate >= 1) {
      sketch += sampled;
    } else {
      for (let i = 0; i < a.sketch.length; i++) sketch += (a.sketch[i]! - b.sketch[i]!) ** 2;
    }
  }
  return { sample, sketch };
}

/** ‖child − candidate‖ / ‖candidate‖ over the layers the fingerprint comparison used, read exactly. */
async function exactRelativeDistance(child: Fingerprint, candidate: RankedCandidate, signal?: AbortSignal): Promise<number> {
  const layers = new Set(candidate.comparison.layers.map((layer) => layer.name));
  const [childFile, candidateFile] = await Promise.all([openCheckpoint(child.path), openCheckpoint(candidate.fingerprint.path)]);
  try {
    const childTensors = byNormalisedName(childFile.tensors);
    const candidateTensors = byNormalisedName(candidateFile.tensors);
    let squared = 0;
    let reference = 0;
    for (const name of layers) {
      const a = childTensors.get(name);
      const b = candidateTensors.get(name);
      if (!a || !b || a.elementCount !== b.elementCount) continue;
      const streamA = a.chunks({ signal })[Symbol.asyncIterator]();
      const streamB = b.chunks({ signal })[Symbol.asyncIterator]();
      for (;;) {
        throwIfAborted(signal);
        const [x, y] = await Promise.all([streamA.next(), streamB.next()]);
        if (x.done || y.done) break;
        for (let i = 0; i < x.value.length; i++) {
          squared += (x.value[i]! - y.value[i]!) ** 2;
          reference += y.value[i]! ** 2;
        }
      }
    }
    return reference > 0 ? Math.sqrt(squared / reference) : Infinity;
  } finally {
    await Promise.all([childFile.close(), candidateFile.close()]);
  }
}

function byNormalisedName(tensors: readonly Tensor[]): Map<string, Tensor> {
  const names = normalisedNames(tensors.map((tensor) => tensor.name));
  return new Map(tensors.map((tensor, i) => [names[i]!, tensor]));
}
