import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { CancelledError, describeError, throwIfAborted } from '../errors';
import type { FingerprintCache } from '../fingerprint/cache';
import type { Fingerprint } from '../fingerprint/fingerprint';
import { conflicts, readDeclaredLineage, type DeclaredLink } from './declared';
import { findCheckpoints, lineageOf, type LineageEdge } from './scan';

/**
 * The lineage graph of a set of folders, kept current as files come and go. Each checkpoint is
 * fingerprinted once (and cached across sessions); a changed file is re-read alone, and the
 * graph is rebuilt from fingerprints, which costs no file I/O. Paths are absolute.
 */
export interface IndexedCheckpoint {
  readonly path: string;
  readonly sizeBytes: number;
  readonly format?: string;
  readonly parameters?: number;
  readonly error?: string;
}

export interface IndexConflict {
  readonly child: string;
  readonly declaredParent: string;
  readonly message: string;
  /** File that makes the declaration. */
  readonly sourceFile?: string;
  /** The field or key declared, e.g. `_name_or_path`. */
  readonly field?: string;
}

export interface IndexSnapshot {
  readonly version: number;
  readonly checkpoints: readonly IndexedCheckpoint[];
  readonly edges: readonly LineageEdge[];
  readonly families: readonly (readonly string[])[];
  readonly conflicts: readonly IndexConflict[];
  readonly indexing: boolean;
}

export interface IndexOptions {
  readonly cache: FingerprintCache;
  /** Files above this size are listed but not read (0 = no limit). */
  readonly maxFileBytes?: number;
  /** Decides which checkpoint files under the roots are indexed. */
  readonly accept?: (file: string) => boolean;
  readonly onWarning?: (message: string) => void;
}

export type Progress = (done: number, total: number, file: string) => void;

export class WorkspaceIndex {
  private roots: string[] = [];
  private readonly entries = new Map<string, IndexedCheckpoint>();
  private readonly fingerprints = new Map<string, Fingerprint>();
  /** What the roots' files declare, as of the last refreshDeclarations(). */
  private declaredLinks: DeclaredLink[] = [];
  private snapshotCache?: IndexSnapshot;
  private version = 0;
  private indexing = false;

  constructor(private readonly options: IndexOptions) {}

  /** Lists and fingerprints every checkpoint under `roots`; cached ones are not re-read unless `force`. */
  async rebuild(roots: readonly string[], { signal, progress, force = false }: { signal?: AbortSignal; progress?: Progress; force?: boolean } = {}): Promise<void> {
    this.roots = roots.map((root) => path.resolve(root));
    this.indexing = true;
    this.changed();
    try {
      const files: string[] = [];
      for (const root of this.roots) files.push(...(await findCheckpoints(root)).filter((file) => this.options.accept?.(file) ?? true));
      const wanted = new Set(files);
      for (const known of [...this.entries.keys()]) if (!wanted.has(known)) this.forget(known);
      for (const [index, file] of files.entries()) {
        throwIfAborted(signal);
        await this.read(file, signal, force);
        progress?.(index + 1, files.length, file);
      }
    } finally {
      this.indexing = false;
      this.changed();
    }
  }

  /** A file was created or changed: re-read it alone. */
  async update(file: string, signal?: AbortSignal): Promise<void> {
    const absolute = path.resolve(file);
    if (!this.roots.some((root) => isInside(absolute, root)) || !(this.options.accept?.(absolute) ?? true)) return;
    await this.read(absolute, signal);
    this.changed();
  }

  /** A file was deleted (or renamed away). */
  remove(file: string): void {
    if (this.forget(path.resolve(file))) this.changed();
  }

  snapshot(): IndexSnapshot {
    this.snapshotCache ??= this.computeSnapshot();
    return this.snapshotCache;
  }

  /** Fingerprint of an indexed checkpoint, for ranking and comparison requests. */
  fingerprint(file: string): Fingerprint | undefined {
    return this.fingerprints.get(path.resolve(file));
  }

  /** Fingerprints a checkpoint that may lie outside the index (a candidate picked by hand). */
  async fingerprintAnywhere(file: string, signal?: AbortSignal): Promise<Fingerprint> {
    return this.fingerprint(file) ?? { ...(await this.options.cache.get(path.resolve(file), { signal })), path: path.resolve(file) };
  }

  private async read(file: string, signal?: AbortSignal, force = false): Promise<void> {
    let sizeBytes = 0;
    try {
      sizeBytes = (await fs.stat(file)).size;
      const limit = this.options.maxFileBytes ?? 0;
      if (limit > 0 && sizeBytes > limit) {
        this.fingerprints.delete(file);
        this.entries.set(file, { path: file, sizeBytes, error: `${file}: larger than the size limit (${Math.round(limit / 1048576)} MB), not read` });
        return;
      }
      const fingerprint = { ...(await this.options.cache.get(file, { signal, force })), path: file };
      this.fingerprints.set(file, fingerprint);
      this.entries.set(file, { path: file, sizeBytes, format: fingerprint.format, parameters: fingerprint.parameterCount });
    } catch (error) {
      if (error instanceof CancelledError) throw error;
      this.fingerprints.delete(file);
      this.entries.set(file, { path: file, sizeBytes, error: describeError(error) });
    }
  }

  private forget(file: string): boolean {
    this.fingerprints.delete(file);
    return this.entries.delete(file);
  }

  private changed(): void {
    this.version++;
    this.snapshotCache = undefined;
  }

  private computeSnapshot(): IndexSnapshot {
    const fingerprints = [...this.fingerprints.values()];
    const declared = this.declaredLinks;
    const { edges, families, related } = lineageOf(fingerprints, { declared });
    const found = conflicts(declared, edges, related).map((conflict): IndexConflict => {
      const link = declared.find((candidate) => candidate.child === conflict.child && candidate.parent === conflict.declaredParent);
      return { ...conflict, ...(link ? declarationSource(link) : {}) };
    });
    return {
      version: this.version,
      checkpoints: [...this.entries.values()].sort((a, b) => a.path.localeCompare(b.path)),
      edges,
      families,
      conflicts: found,
      indexing: this.indexing,
    };
  }

  /** Re-reads what the roots' files declare (configs, model cards, runs); call after changes. */
  async refreshDeclarations(signal?: AbortSignal): Promise<void> {
    const links: DeclaredLink[] = [];
    for (const root of this.roots) {
      const inside = [...this.fingerprints.values()]
        .filter((fingerprint) => isInside(fingerprint.path, root))
        .map((fingerprint) => ({ path: path.relative(root, fingerprint.path), metadata: fingerprint.metadata }));
      const found = await readDeclaredLineage(root, inside, { signal, onWarning: this.options.onWarning });
      for (const link of found) {
        links.push({
          ...link,
          child: path.join(root, link.child),
          parent: link.parent === undefined ? undefined : path.join(root, link.parent),
          source: `${root}${path.sep}${link.source}`,
        });
      }
    }
    this.declaredLinks = links;
    this.changed();
  }
}

function isInside(file: string, root: string): boolean {
  const relative = path.relative(root, file);
  return relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative);
}

/** Splits a declaration's source ("<file> <field>" or "<file> metadata <key>") into file and field. */
function declarationSource(link: DeclaredLink): { sourceFile: string; field: string } {
  const metadata = link.source.lastIndexOf(' metadata ');
  if (metadata >= 0) return { sourceFile: link.source.slice(0, metadata), field: link.source.slice(metadata + ' metadata '.length) };
  const space = link.source.lastIndexOf(' ');
  return space < 0 ? { sourceFile: link.source, field: '' } : { sourceFile: link.source.slice(0, space), field: link.source.slice(space + 1) };
}
