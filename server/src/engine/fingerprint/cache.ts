import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { FINGERPRINT_VERSION, fingerprintFile, type Fingerprint, type FingerprintOptions, type TensorFingerprint } from './fingerprint';

/**
 * Fingerprints on disk, one JSON file per checkpoint, keyed by the checkpoint's identity
 * (absolute path, size, modification time, fingerprint version). Written to a temporary file
 * and renamed, so a crash never leaves a half-written entry; an unreadable entry is recomputed.
 */
export class FingerprintCache {
  /** How many fingerprints were computed (not served from the cache) by this instance. */
  computed = 0;

  constructor(readonly directory: string) {}

  /** `force` re-reads the file even when a matching entry exists (a user's "rescan"). */
  async get(file: string, options: FingerprintOptions & { force?: boolean } = {}): Promise<Fingerprint> {
    const absolute = path.resolve(file);
    const stat = await fs.stat(absolute);
    const entry = path.join(this.directory, `${entryKey(absolute)}.json`);
    const cached = options.force ? undefined : await readEntry(entry);
    if (cached && cached.version === FINGERPRINT_VERSION && cached.size === stat.size && cached.mtimeMs === stat.mtimeMs) {
      return { ...cached, path: file };
    }
    const fingerprint = await fingerprintFile(file, options);
    this.computed++;
    await writeAtomically(entry, serialise({ ...fingerprint, path: absolute }));
    return fingerprint;
  }
}

/** Default location: $XDG_CACHE_HOME/neural-lineage or ~/.cache/neural-lineage. */
export function defaultCacheDirectory(): string {
  const base = process.env.XDG_CACHE_HOME || path.join(process.env.HOME || process.cwd(), '.cache');
  return path.join(base, 'neural-lineage', 'fingerprints');
}

function entryKey(absolutePath: string): string {
  return createHash('sha256').update(absolutePath).digest('hex').slice(0, 32);
}

async function readEntry(entry: string): Promise<Fingerprint | undefined> {
  try {
    return deserialise(await fs.readFile(entry, 'utf8'));
  } catch {
    return undefined;
  }
}

async function writeAtomically(target: string, text: string): Promise<void> {
  await fs.mkdir(path.dirname(target), { recursive: true });
  // Unique per write: two writes of one entry in the same millisecond must not share a file.
  const temporary = `${target}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  await fs.writeFile(temporary, text);
  await fs.rename(temporary, target);
}

type Encoded<T> = { [K in keyof T]: T[K] extends Float64Array | Float32Array ? string : T[K] };

export function serialise(fingerprint: Fingerprint): string {
  const tensors = fingerprint.tensors.map((tensor): Encoded<TensorFingerprint> => ({
    ...tensor,
    sketch: Buffer.from(tensor.sketch.buffer, tensor.sketch.byteOffset, tensor.sketch.byteLength).toString('base64'),
    sample: Buffer.from(tensor.sample.buffer, tensor.sample.byteOffset, tensor.sample.byteLength).toString('base64'),
    rowSketch: Buffer.from(tensor.rowSketch.buffer, tensor.rowSketch.byteOffset, tensor.rowSketch.byteLength).toString('base64'),
  }));
  return JSON.stringify({ ...fingerprint, tensors }, (_key, value: unknown) =>
    typeof value === 'number' && !Number.isFinite(value) ? { [NON_FINITE]: String(value) } : value,
  );
}

/** JSON has no Infinity or NaN; statistics of tensors holding them are written as tagged strings. */
const NON_FINITE = '$nonFinite';

export function deserialise(text: string): Fingerprint {
  const parsed = JSON.parse(text, (_key, value: unknown) =>
    value !== null && typeof value === 'object' && NON_FINITE in value ? Number((value as Record<string, string>)[NON_FINITE]) : value,
  ) as Omit<Fingerprint, 'tensors'> & { tensors: Encoded<TensorFingerprint>[] };
  const tensors = parsed.tensors.map((tensor): TensorFingerprint => ({
    ...tensor,
    sketch: new Float64Array(toArrayBuffer(Buffer.from(tensor.sketch, 'base64'))),
    sample: new Float32Array(toArrayBuffer(Buffer.from(tensor.sample, 'base64'))),
    rowSketch: new Float32Array(toArrayBuffer(Buffer.from(tensor.rowSketch, 'base64'))),
  }));
  return { ...parsed, tensors };
}

function toArrayBuffer(buffer: Buffer): ArrayBuffer {
  return buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) as ArrayBuffer;
}
