import { promises as fs } from 'node:fs';
import { CheckpointError, FileChangedError } from '../errors';

/**
 * Random access to a range of bytes. Readers only ever ask for the ranges they need, so a
 * 20 GB checkpoint is listed by reading its header alone.
 */
export interface ByteSource {
  /** Name used in error messages (the file path, or path plus archive member). */
  readonly name: string;
  readonly size: number;
  /** Reads exactly `length` bytes at `offset`; a range outside the source is an error. */
  read(offset: number, length: number): Promise<Buffer>;
  /** A view of a sub-range; nothing is read until the view is read. */
  slice(offset: number, length: number, name?: string): ByteSource;
}

/** Largest single read; bigger requests must stream. Guards against headers that ask for more. */
export const MAX_SINGLE_READ = 512 * 1024 * 1024;

/**
 * Checks every range against the source's size before `readRaw` sees it; subclasses supply
 * only the raw read.
 */
export abstract class RangeCheckedSource implements ByteSource {
  abstract readonly name: string;
  abstract readonly size: number;
  protected abstract readRaw(offset: number, length: number): Promise<Buffer>;

  async read(offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new CheckpointError(this.name, `invalid byte range ${offset}+${length}`);
    }
    if (offset + length > this.size) {
      throw new CheckpointError(
        this.name,
        `truncated: needs bytes ${offset}..${offset + length} but has only ${this.size}`,
      );
    }
    if (length > MAX_SINGLE_READ) {
      throw new CheckpointError(this.name, `refusing a single read of ${length} bytes`);
    }
    return this.readRaw(offset, length);
  }

  slice(offset: number, length: number, name?: string): ByteSource {
    // The integer check matters: NaN would slip through the comparisons below.
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new CheckpointError(
        name ?? this.name,
        `range ${offset}+${length} lies outside the ${this.size} bytes available`,
      );
    }
    return new SliceSource(this, offset, length, name ?? this.name);
  }
}

class SliceSource extends RangeCheckedSource {
  constructor(
    private readonly parent: RangeCheckedSource,
    private readonly start: number,
    readonly size: number,
    readonly name: string,
  ) {
    super();
  }
  protected readRaw(offset: number, length: number): Promise<Buffer> {
    return this.parent.read(this.start + offset, length);
  }
}

/** A source held in memory (decompressed archive members, test data). */
export class BufferSource extends RangeCheckedSource {
  readonly size: number;
  constructor(
    private readonly buffer: Buffer,
    readonly name: string,
  ) {
    super();
    this.size = buffer.length;
  }
  protected async readRaw(offset: number, length: number): Promise<Buffer> {
    return this.buffer.subarray(offset, offset + length);
  }
}

/**
 * A file opened once. Every read checks that the file's size and modification time are still
 * those seen at open, so a checkpoint rewritten in place mid-read raises FileChangedError
 * (the caller retries) instead of mixing old and new bytes. A file replaced by rename keeps
 * the old inode open and stays consistent.
 */
export class FileSource extends RangeCheckedSource {
  private constructor(
    private readonly handle: fs.FileHandle,
    readonly name: string,
    readonly size: number,
    readonly mtimeMs: number,
  ) {
    super();
  }

  static async open(path: string): Promise<FileSource> {
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(path, 'r');
    } catch (error) {
      throw new CheckpointError(path, `cannot open: ${(error as NodeJS.ErrnoException).code ?? error}`);
    }
    const stat = await handle.stat();
    if (!stat.isFile()) {
      await handle.close();
      throw new CheckpointError(path, 'not a regular file');
    }
    return new FileSource(handle, path, stat.size, stat.mtimeMs);
  }

  protected async readRaw(offset: number, length: number): Promise<Buffer> {
    const buffer = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(buffer, done, length - done, offset + done);
      if (bytesRead === 0) throw new FileChangedError(this.name);
      done += bytesRead;
    }
    await this.assertUnchanged();
    return buffer;
  }

  async assertUnchanged(): Promise<void> {
    const stat = await this.handle.stat();
    if (stat.size !== this.size || stat.mtimeMs !== this.mtimeMs) throw new FileChangedError(this.name);
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
