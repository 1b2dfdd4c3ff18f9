import { describeError } from '../engine/errors';
import type { FingerprintCache } from '../engine/fingerprint/cache';
import type { Fingerprint } from '../engine/fingerprint/fingerprint';
import { rankParentsSettled } from '../engine/lineage/exactPass';

export interface ParentOutput {
  readonly child: string;
  readonly parent: string | null;
  readonly ranking: readonly { candidate: string; score: number; probability: number; related: boolean; relativeDistance: number | null }[];
  readonly method: string;
  /** True when the two best candidates were too close for fingerprints and were compared exactly. */
  readonly exactPass: boolean;
  readonly errors: readonly string[];
}

export const PARENT_METHOD = 'weights';

/** `neural-lineage parent CHILD --candidates P...`: the closed-set parent query. */
export async function runParent(
  child: string,
  candidates: readonly string[],
  cache: FingerprintCache,
  json: boolean,
  write: (text: string) => void,
): Promise<number> {
  const errors: string[] = [];
  const load = async (file: string): Promise<Fingerprint | undefined> => {
    try {
      return { ...(await cache.get(file)), path: file };
    } catch (error) {
      errors.push(describeError(error));
      return undefined;
    }
  };
  const childPrint = await load(child);
  const candidatePrints = (await Promise.all(candidates.map(load))).filter((print): print is Fingerprint => print !== undefined);
  const answer = childPrint ? await rankParentsSettled(childPrint, candidatePrints) : { parent: undefined, ranking: [], exactPass: false };
  const output: ParentOutput = {
    child,
    parent: answer.parent?.fingerprint.path ?? null,
    ranking: answer.ranking.map((entry) => ({
      candidate: entry.fingerprint.path,
      score: Number(entry.score.toFixed(4)),
      probability: Number(entry.probability.toFixed(4)),
      related: entry.comparison.related,
      relativeDistance: Number.isFinite(entry.comparison.relativeDistance) ? Number(entry.comparison.relativeDistance.toPrecision(4)) : null,
    })),
    method: PARENT_METHOD,
    exactPass: answer.exactPass,
    errors,
  };
  if (json) {
    write(JSON.stringify(output, null, 2) + '\n');
  } else {
    write(`${child}\n  parent  ${output.parent ?? 'none (no candidate is related)'}\n  ranking\n`);
    for (const entry of output.ranking) {
      write(`    ${entry.probability.toFixed(3)}  ${entry.candidate}${entry.related ? `  (distance ${entry.relativeDistance})` : '  (unrelated)'}\n`);
    }
    for (const error of errors) write(`  error   ${error}\n`);
  }
  return errors.length > 0 ? 1 : 0;
}
