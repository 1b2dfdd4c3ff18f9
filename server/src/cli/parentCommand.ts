import { describeError } from '../engine/errors';
import type { FingerprintCache } from '../engine/fingerprint/cache';
import type { Fingerprint } from '../engine/fingerprint/fingerprint';
import type { ParentMethod } from '../engine/lineage/methods';
import { findParent, type ParentQueryOptions } from '../engine/lineage/parentQuery';

export interface ParentOutput {
  readonly child: string;
  readonly parent: string | null;
  readonly ranking: readonly { candidate: string; score: number; probability: number; related: boolean; relativeDistance: number | null }[];
  /** The method that answered (auto names the one it used). */
  readonly method: ParentMethod;
  /** How: the device, model and probe of the representation methods. */
  readonly details: string;
  /** True when the two best candidates were too close for fingerprints and were compared exactly. */
  readonly exactPass: boolean;
  /** The learned detector's probability that no candidate is the parent. */
  readonly noParent?: number;
  readonly errors: readonly string[];
}

/** `neural-lineage parent CHILD --candidates P...`: the closed-set parent query. */
export async function runParent(
  child: string,
  candidates: readonly string[],
  cache: FingerprintCache,
  json: boolean,
  query: ParentQueryOptions,
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
  let output: ParentOutput = { child, parent: null, ranking: [], method: query.method ?? 'auto', details: '', exactPass: false, errors };
  if (childPrint) {
    try {
      const answer = await findParent(childPrint, candidatePrints, query);
      output = {
        ...output,
        parent: answer.parent,
        ranking: answer.ranking.map((entry) => ({
          candidate: entry.candidate,
          score: Number(entry.score.toPrecision(6)),
          probability: Number(entry.probability.toFixed(4)),
          related: entry.related,
          relativeDistance: entry.relativeDistance === null ? null : Number(entry.relativeDistance.toPrecision(4)),
        })),
        method: answer.method,
        details: answer.details,
        exactPass: answer.exactPass,
        ...(answer.noParent === undefined ? {} : { noParent: Number(answer.noParent.toFixed(4)) }),
      };
    } catch (error) {
      errors.push(describeError(error));
    }
  }
  if (json) {
    write(JSON.stringify(output, null, 2) + '\n');
  } else {
    write(`${child}\n  parent  ${output.parent ?? 'none (no candidate is related)'}\n  method  ${output.method}: ${output.details}\n  ranking\n`);
    for (const entry of output.ranking) {
      const note = !entry.related ? '  (unrelated)' : entry.relativeDistance !== null ? `  (distance ${entry.relativeDistance})` : `  (score ${entry.score})`;
      write(`    ${entry.probability.toFixed(3)}  ${entry.candidate}${note}\n`);
    }
    if (output.noParent !== undefined) write(`    ${output.noParent.toFixed(3)}  no parent among the candidates\n`);
    for (const error of errors) write(`  error   ${error}\n`);
  }
  return errors.length > 0 ? 1 : 0;
}
