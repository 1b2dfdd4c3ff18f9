import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { describeError, throwIfAborted } from '../errors';
import type { Fingerprint } from '../fingerprint/fingerprint';
import type { FingerprintCache } from '../fingerprint/cache';
import { isCheckpointPath } from '../formats/index';
import { compareFingerprints, type Comparison } from './compare';
import { conflicts, readDeclaredLineage, type DeclaredLink, type LineageConflict } from './declared';
import { derivedCopy, type Relation } from './derived';
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

  // Derived copies (identical, 16-bit, pruned) are leaves hung on their source.
  const edges: LineageEdge[] = [];
  const copyOf = new Map<number, number>();
  for (let a = 0; a < n; a++) {
    throwIfAborted(signal);
    for (let b = a + 1; b < n; b++) {
      if (copyOf.has(a) || copyOf.has(b)) continue;
      const copy = derivedCopy(fingerprints[a]!, fingerprints[b]!, compare(a, b));
      if (!copy) continue;
      const [source, derived] = copy.aIsSource ? [a, b] : [b, a];
      copyOf.set(derived, source);
      edges.push({ parent: fingerprints[source]!.path, child: fingerprints[derived]!.path, relation: copy.relation, confidence: 1, evidence: copy.evidence });
    }
  }

  // Families: connected components of relatedness among the originals.
  const originals = fingerprints.map((_, i) => i).filter((i) => !copyOf.has(i));
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
  for (const members of groups.values()) {
    throwIfAborted(signal);
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
      edges.push({
        parent: fingerprints[members[parent]!]!.path,
        child: fingerprints[members[child]!]!.path,
        relation: link?.relation ?? 'finetune',
        confidence: round(tree.confidence[child]!),
        evidence: (link ? `declared in ${link.source}; ` : '') + `relative weight distance ${comparison.relativeDistance.toPrecision(3)} over ${comparison.layers.length} shared layers` +
          (comparison.reinitialised.length + comparison.reshaped.length > 0
            ? `; ${comparison.reinitialised.length + comparison.reshaped.length} replaced (${[...comparison.reshaped.map((r) => r.name), ...comparison.reinitialised].join(', ')})`
            : ''),
      });
    });
    const paths = members.map((i) => fingerprints[i]!.path);
    for (const [copy, source] of copyOf) if (members.includes(source)) paths.push(fingerprints[copy]!.path);
    families.push(paths);
  }
  const related = (a: string, b: string): boolean => {
    const x = indexOf.get(a);
    const y = indexOf.get(b);
    return x !== undefined && y !== undefined && compare(x, y).related;
  };
  return { edges, families, related };
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}
