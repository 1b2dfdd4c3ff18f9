import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { describeError, throwIfAborted } from '../errors';
import type { Fingerprint } from '../fingerprint/fingerprint';
import type { FingerprintCache } from '../fingerprint/cache';
import { isCheckpointPath } from '../formats/index';
import { compareFingerprints, type Comparison } from './compare';
import { conflicts, readDeclaredLineage, type DeclaredLink, type LineageConflict } from './declared';
import { adapterFit, adapterTargets, type AdapterTargets } from './adapters';
import { convertedCopy, derivedCopy, isQuantized, quantizedCopy, type DerivedCopy, type Relation } from './derived';
import { lowRankChange } from './lowRank';
import { mergeOf } from './merge';
import { familyTree } from './tree';

/** `scan`'s answer; paths are relative to the scanned folder. The JSON schema is in the README. */
export interface ScanResult {
  readonly checkpoints: readonly { path: string; format?: string; parameters?: number; error?: string }[];
  readonly edges: readonly LineageEdge[];
  /** Groups of related checkpoints; unrelated models are families of one. */
  readonly families: readonly (readonly string[])[];
  /** What files declare about origins (configs, adapter configs, model cards, metadata, runs). */
  readonly declared: readonly DeclaredLink[];
  /** Declarations the weights contradict. */
  readonly conflicts: readonly LineageConflict[];
  /** Problems with declarations (malformed configs, ambiguous names). */
  readonly warnings: readonly string[];
}

export interface LineageEdge {
  readonly parent: string;
  readonly child: string;
  readonly relation: Relation;
  readonly confidence: number;
  readonly evidence: string;
}

export interface ScanOptions {
  readonly cache: FingerprintCache;
  readonly signal?: AbortSignal;
  /** Called after each checkpoint is fingerprinted (or fails). */
  readonly onProgress?: (done: number, total: number, file: string) => void;
}

const SKIPPED_FOLDERS = new Set(['node_modules', '.git', '__pycache__', '.venv', 'venv']);

/** Every checkpoint under `folder`; shards named by a sharded index count only through the index. */
export async function findCheckpoints(folder: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (directory: string): Promise<void> => {
    const entries = await fs.readdir(directory, { withFileTypes: true }).catch(() => []);
    for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      const full = path.join(directory, entry.name);
      if (entry.isDirectory() && !SKIPPED_FOLDERS.has(entry.name) && !entry.name.startsWith('.')) await walk(full);
      else if (entry.isFile() && isCheckpointPath(entry.name)) found.push(full);
    }
  };
  await walk(folder);
  const shards = new Set<string>();
  for (const file of found.filter((name) => name.endsWith('.index.json'))) {
    try {
      const index = JSON.parse(await fs.readFile(file, 'utf8')) as { weight_map?: Record<string, string> };
      for (const shard of Object.values(index.weight_map ?? {})) shards.add(path.resolve(path.dirname(file), shard));
    } catch {
      // An unreadable index is reported when it is opened as a checkpoint.
    }
  }
  return found.filter((file) => !shards.has(path.resolve(file)));
}

export async function scanFolder(folder: string, options: ScanOptions): Promise<ScanResult> {
  const files = await findCheckpoints(folder);
  const fingerprints: Fingerprint[] = [];
  const checkpoints: { path: string; format?: string; parameters?: number; error?: string }[] = [];
  for (const [index, file] of files.entries()) {
    throwIfAborted(options.signal);
    const relative = path.relative(folder, file);
    try {
      const fingerprint = await options.cache.get(file, { signal: options.signal });
      fingerprints.push({ ...fingerprint, path: relative });
      checkpoints.push({ path: relative, format: fingerprint.format, parameters: fingerprint.parameterCount });
    } catch (error) {
      if (options.signal?.aborted) throw error;
      checkpoints.push({ path: relative, error: describeError(error) });
    }
    options.onProgress?.(index + 1, files.length, relative);
  }
  const warnings: string[] = [];
  const declared = await readDeclaredLineage(folder, fingerprints, { signal: options.signal, onWarning: (message) => warnings.push(message) });
  const { edges, families, related } = lineageOf(fingerprints, { declared, signal: options.signal });
  return { checkpoints, edges, families, declared, conflicts: conflicts(declared, edges, related), warnings };
}

/**
 * The lineage graph of a set of fingerprinted checkpoints. Strong declarations (a base file's
 * hash, a training run's step order) between related checkpoints fix those links; every other
 * declaration is left for `conflicts` to check against what the weights say.
 */
export function lineageOf(
  fingerprints: readonly Fingerprint[],
  { declared = [], signal }: { declared?: readonly DeclaredLink[]; signal?: AbortSignal } = {},
): { edges: LineageEdge[]; families: string[][]; related: (a: string, b: string) => boolean } {
  const n = fingerprints.length;
  const indexOf = new Map(fingerprints.map((fingerprint, i) => [fingerprint.path, i]));
  const comparisons = new Map<number, Comparison>();
  const compare = (a: number, b: number): Comparison => {
    const key = a * n + b;
    let comparison = comparisons.get(key);
    if (!comparison) {
      comparison = compareFingerprints(fingerprints[a]!, fingerprints[b]!);
      comparisons.set(key, comparison);
    }
    return comparison;
  };

  // Adapters hold only low-rank factors; they are attached to a base after the families are known.
  const adapters = new Map<number, AdapterTargets>();
  fingerprints.forEach((fingerprint, i) => {
    const targets = adapterTargets(fingerprint);
    if (targets) adapters.set(i, targets);
  });
  const models = fingerprints.map((_, i) => i).filter((i) => !adapters.has(i));

  // Derived copies (converted, 16-bit, pruned, quantized) are leaves hung on their source.
  const edges: LineageEdge[] = [];
  const copyOf = new Map<number, number>();
  const addCopy = (source: number, derived: number, copy: DerivedCopy) => {
    copyOf.set(derived, source);
    edges.push({ parent: fingerprints[source]!.path, child: fingerprints[derived]!.path, relation: copy.relation, confidence: 1, evidence: copy.evidence });
  };
  const quantized = new Set(models.filter((i) => isQuantized(fingerprints[i]!)));
  for (const [x, a] of models.entries()) {
    throwIfAborted(signal);
    for (const b of models.slice(x + 1)) {
      if (copyOf.has(a) || copyOf.has(b) || quantized.has(a) || quantized.has(b)) continue;
      const copy = derivedCopy(fingerprints[a]!, fingerprints[b]!, compare(a, b)) ?? convertedCopy(fingerprints[a]!, fingerprints[b]!);
      if (copy) addCopy(copy.aIsSource ? a : b, copy.aIsSource ? b : a, copy);
    }
  }
  for (const copy of quantized) {
    const sources = models
      .filter((i) => !quantized.has(i) && !copyOf.has(i) && compare(copy, i).related)
      .sort((x, y) => compare(copy, x).relativeDistance - compare(copy, y).relativeDistance);
    if (sources.length > 0) addCopy(sources[0]!, copy, quantizedCopy(fingerprints[sources[0]!]!, fingerprints[copy]!, compare(sources[0]!, copy)));
  }

  // Families: connected components of relatedness among the originals.
  const originals = models.filter((i) => !copyOf.has(i));
  const familyOf = new Map<number, number>(originals.map((i) => [i, i]));
  const find = (i: number): number => (familyOf.get(i) === i ? i : find(familyOf.get(i)!));
  for (let x = 0; x < originals.length; x++) {
    for (let y = x + 1; y < originals.length; y++) {
      const a = originals[x]!;
      const b = originals[y]!;
      if (compare(a, b).related) familyOf.set(find(a), find(b));
    }
  }
  const groups = new Map<number, number[]>();
  for (const i of originals) groups.set(find(i), [...(groups.get(find(i)) ?? []), i]);

  const families: string[][] = [];
  const familyPaths = new Map<number, string[]>();
  for (const group of groups.values()) {
    throwIfAborted(signal);
    const members = withoutMerges(group, fingerprints, compare, edges);
    const position = new Map(members.map((member, i) => [member, i]));
    const declaredParents = new Map<number, number>();
    const declaredRelation = new Map<number, DeclaredLink>();
    for (const link of declared) {
      const child = position.get(indexOf.get(link.child) ?? -1);
      const parent = position.get(indexOf.get(link.parent ?? '') ?? -1);
      if (child === undefined || parent === undefined || link.strength !== 'strong' || link.relation === 'merged') continue;
      declaredParents.set(child, parent);
      declaredRelation.set(child, link);
    }
    const tree = familyTree(
      members.map((i) => fingerprints[i]!),
      (a, b) => compare(members[a]!, members[b]!),
      declaredParents,
    );
    tree.parents.forEach((parent, child) => {
      if (parent < 0) return;
      const comparison = compare(members[child]!, members[parent]!);
      const link = declaredParents.get(child) === parent ? declaredRelation.get(child) : undefined;
      const lowRank = link ? undefined : lowRankChange(fingerprints[members[child]!]!, fingerprints[members[parent]!]!);
      edges.push({
        parent: fingerprints[members[parent]!]!.path,
        child: fingerprints[members[child]!]!.path,
        relation: link?.relation ?? (lowRank ? 'adapter' : 'finetune'),
        confidence: round(tree.confidence[child]!),
        evidence: (link ? `declared in ${link.source}; ` : '') +
          (lowRank ? `merged low-rank adapter: the ${lowRank.changedMatrices} changed matrices differ by rank ≤ ${lowRank.rank}; ` : '') +
          `relative weight distance ${comparison.relativeDistance.toPrecision(3)} over ${comparison.layers.length} shared layers` +
          (comparison.reinitialised.length + comparison.reshaped.length > 0
            ? `; ${comparison.reinitialised.length + comparison.reshaped.length} replaced (${[...comparison.reshaped.map((r) => r.name), ...comparison.reinitialised].join(', ')})`
            : ''),
      });
    });
    const paths = group.map((i) => fingerprints[i]!.path);
    for (const [copy, source] of copyOf) if (group.includes(source)) paths.push(fingerprints[copy]!.path);
    group.forEach((i) => familyPaths.set(i, paths));
    families.push(paths);
  }
  const withParent = new Set(edges.map((edge) => edge.child));
  const roots = models.filter((i) => !withParent.has(fingerprints[i]!.path));
  for (const [adapter, targets] of adapters) {
    const attached = attachAdapter(adapter, targets, fingerprints, roots, models, copyOf, declared, edges);
    const paths = attached === undefined ? undefined : familyPaths.get(copyOf.get(attached) ?? attached);
    if (paths) paths.push(fingerprints[adapter]!.path);
    else families.push([fingerprints[adapter]!.path]);
  }
  const related = (a: string, b: string): boolean => {
    const x = indexOf.get(a);
    const y = indexOf.get(b);
    return x !== undefined && y !== undefined && compare(x, y).related;
  };
  return { edges, families, related };
}

/**
 * Takes out of a family the members that are merges of other members (each gets an edge from
 * every parent) and returns the rest for the tree. When M = 0.3A + 0.7B, each of the three is a
 * combination of the other two (B = 1.43M − 0.43A); the merge is the one whose combination
 * looks like a merge: weights that are positive (an average, a soup), or with little negative
 * weight (task arithmetic subtracts a fraction of its base). So the members that fit are taken
 * in order of negative weight, and each is checked again on the members not yet taken as merges.
 */
const MAX_MERGE_WEIGHT_SUM = 2.5;

function withoutMerges(
  group: readonly number[],
  fingerprints: readonly Fingerprint[],
  compare: (a: number, b: number) => Comparison,
  edges: LineageEdge[],
): number[] {
  if (group.length < 3) return [...group];
  const fitAmong = (child: number, pool: readonly number[]) => {
    const others = pool.filter((other) => other !== child);
    const nearestFirst = others.map((_, k) => k).sort((x, y) => compare(child, others[x]!).relativeDistance - compare(child, others[y]!).relativeDistance);
    const fit = mergeOf(fingerprints[child]!, others.map((other) => fingerprints[other]!), nearestFirst);
    if (!fit || fit.weights.reduce((sum, weight) => sum + Math.abs(weight), 0) > MAX_MERGE_WEIGHT_SUM) return undefined;
    const negative = fit.weights.reduce((sum, weight) => sum + Math.max(0, -weight), 0);
    return { ...fit, parents: fit.parents.map((k) => others[k]!), negative };
  };
  const candidates = group
    .map((child) => ({ child, fit: fitAmong(child, group) }))
    .filter((entry) => entry.fit)
    .sort((x, y) => x.fit!.negative - y.fit!.negative);
  const merges: number[] = [];
  for (const { child } of candidates) {
    const fit = fitAmong(child, group.filter((member) => !merges.includes(member)));
    if (!fit) continue;
    merges.push(child);
    const weights = fit.weights.map((weight) => weight.toFixed(3)).join(', ');
    fit.parents.forEach((parent, j) => {
      edges.push({
        parent: fingerprints[parent]!.path,
        child: fingerprints[child]!.path,
        relation: 'merged',
        confidence: 1,
        evidence: `merge of ${fit.parents.length} checkpoints with weights ${weights} (this one ${fit.weights[j]!.toFixed(3)}): ` +
          `relative residual ${fit.relativeResidual.toExponential(1)} against ${fit.singleResidual.toExponential(1)} for the best single parent`,
      });
    });
  }
  return group.filter((member) => !merges.includes(member));
}

/**
 * Hangs an adapter on the base it fits: the declared base when it fits, else the fitting
 * originals (copies of a base fit too, but an adapter is trained on the original) sharing
 * the confidence, family roots first (adapters are mostly trained on base models). Returns
 * the base's index.
 */
function attachAdapter(
  adapter: number,
  targets: AdapterTargets,
  fingerprints: readonly Fingerprint[],
  roots: readonly number[],
  models: readonly number[],
  copyOf: ReadonlyMap<number, number>,
  declared: readonly DeclaredLink[],
  edges: LineageEdge[],
): number | undefined {
  const fitting = models.filter((i) => adapterFit(targets, fingerprints[i]!) >= 1);
  if (fitting.length === 0) return undefined;
  const declaredBase = declared
    .filter((link) => link.child === fingerprints[adapter]!.path && link.parent !== undefined)
    .map((link) => fingerprints.findIndex((fingerprint) => fingerprint.path === link.parent))
    .find((i) => fitting.includes(i));
  const originals = fitting.filter((i) => !copyOf.has(i));
  const chosen = declaredBase ?? originals.find((i) => roots.includes(i)) ?? originals[0] ?? fitting[0]!;
  const sharing = declaredBase !== undefined ? 1 : Math.max(1, originals.length);
  edges.push({
    parent: fingerprints[chosen]!.path,
    child: fingerprints[adapter]!.path,
    relation: 'adapter',
    confidence: round(1 / sharing),
    evidence: `LoRA adapter of rank ${targets.rank} on ${targets.modules.size} modules` +
      (declaredBase !== undefined ? ', base as declared' : sharing > 1 ? `; ${sharing} checkpoints have these modules and shapes, the weights cannot tell them apart` : ''),
  });
  return chosen;
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}
