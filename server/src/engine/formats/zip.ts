import { constants as bufferConstants } from 'node:buffer';
import { constants as zlibConstants, inflateRawSync } from 'node:zlib';
import { BufferSource, type ByteSource } from '../io/byteSource';
import { CheckpointError } from '../errors';

/**
 * A zip archive's central directory (with zip64), read without touching member data.
 * Stored members become slices of the file, so PyTorch's uncompressed tensor records are
 * read by range; deflated members (np.savez_compressed) are inflated on demand, up to a cap.
 */
export interface ZipMember {
  readonly name: string;
  readonly method: number;
  readonly compressedSize: number;
  readonly size: number;
  /** Offset of the member's local header in the archive. */
  readonly headerOffset: number;
}

export const ZIP_MAGIC = Buffer.from('PK\x03\x04', 'latin1');
/** Deflated members are inflated in memory; larger ones are refused rather than risk the heap. */
export const MAX_INFLATED_MEMBER = 1024 * 1024 * 1024;

const EOCD_SIGNATURE = 0x06054b50;
const ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
const ZIP64_EOCD_SIGNATURE = 0x06064b50;
const CENTRAL_SIGNATURE = 0x02014b50;
const LOCAL_SIGNATURE = 0x04034b50;
const CENTRAL_HEADER_SIZE = 46;
const LOCAL_HEADER_SIZE = 30;
const MAX_COMMENT = 0xffff;
/** Compressed bytes first inflated by memberPrefix; the window grows until the prefix is out. */
const PREFIX_WINDOW = 4096;
const MAX_BUFFER_LENGTH = bufferConstants.MAX_LENGTH;

export class ZipArchive {
  private constructor(
    private readonly source: ByteSource,
    readonly members: ReadonlyMap<string, ZipMember>,
  ) {}

  static async open(source: ByteSource): Promise<ZipArchive> {
    const fail = (problem: string): never => {
      throw new CheckpointError(source.name, `invalid zip archive: ${problem}`);
    };
    const tailLength = Math.min(source.size, 22 + MAX_COMMENT);
    const tail = await source.read(source.size - tailLength, tailLength);
    let eocd = -1;
    for (let i = tail.length - 22; i >= 0; i--) {
      if (tail.readUInt32LE(i) === EOCD_SIGNATURE) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) fail('no end-of-central-directory record (truncated or not a zip file)');
    let entryCount = tail.readUInt16LE(eocd + 10);
    let directorySize = tail.readUInt32LE(eocd + 12);
    let directoryOffset = tail.readUInt32LE(eocd + 16);
    const eocdPosition = source.size - tailLength + eocd;
    if (entryCount === 0xffff || directorySize === 0xffffffff || directoryOffset === 0xffffffff) {
      if (eocdPosition < 20) fail('zip64 locator missing');
      const locator = await source.read(eocdPosition - 20, 20);
      if (locator.readUInt32LE(0) !== ZIP64_LOCATOR_SIGNATURE) fail('zip64 locator missing');
      const recordOffset = safeNumber(locator.readBigUInt64LE(8), 'zip64 record offset', fail);
      if (recordOffset + 56 > source.size) fail('zip64 record lies outside the file');
      const record = await source.read(recordOffset, 56);
      if (record.readUInt32LE(0) !== ZIP64_EOCD_SIGNATURE) fail('zip64 end-of-central-directory record is damaged');
      entryCount = safeNumber(record.readBigUInt64LE(32), 'entry count', fail);
      directorySize = safeNumber(record.readBigUInt64LE(40), 'directory size', fail);
      directoryOffset = safeNumber(record.readBigUInt64LE(48), 'directory offset', fail);
    }
    if (directoryOffset + directorySize > source.size) fail('central directory lies outside the file');
    if (entryCount * CENTRAL_HEADER_SIZE > directorySize) fail(`${entryCount} entries cannot fit in a ${directorySize}-byte directory`);
    const directory = await source.read(directoryOffset, directorySize);

    const members = new Map<string, ZipMember>();
    let at = 0;
    for (let n = 0; n < entryCount; n++) {
      if (at + CENTRAL_HEADER_SIZE > directory.length || directory.readUInt32LE(at) !== CENTRAL_SIGNATURE) {
        fail(`central directory entry ${n} is damaged`);
      }
      const method = directory.readUInt16LE(at + 10);
      let compressedSize = directory.readUInt32LE(at + 20);
      let size = directory.readUInt32LE(at + 24);
      const nameLength = directory.readUInt16LE(at + 28);
      const extraLength = directory.readUInt16LE(at + 30);
      const commentLength = directory.readUInt16LE(at + 32);
      let headerOffset = directory.readUInt32LE(at + 42);
      const end = at + CENTRAL_HEADER_SIZE + nameLength + extraLength + commentLength;
      if (end > directory.length) fail(`central directory entry ${n} runs past the directory`);
      const name = directory.toString('utf8', at + CENTRAL_HEADER_SIZE, at + CENTRAL_HEADER_SIZE + nameLength);
      // zip64 extended information: present values replace the 0xffffffff placeholders, in order.
      let extra = at + CENTRAL_HEADER_SIZE + nameLength;
      const extraEnd = extra + extraLength;
      while (extra + 4 <= extraEnd) {
        const id = directory.readUInt16LE(extra);
        const length = directory.readUInt16LE(extra + 2);
        if (extra + 4 + length > extraEnd) fail(`extra field of "${name}" is damaged`);
        if (id === 0x0001) {
          let field = extra + 4;
          const next = (what: string): number => {
            if (field + 8 > extra + 4 + length) fail(`zip64 field of "${name}" is too short`);
            const value = safeNumber(directory.readBigUInt64LE(field), what, fail);
            field += 8;
            return value;
          };
          if (size === 0xffffffff) size = next('size');
          if (compressedSize === 0xffffffff) compressedSize = next('compressed size');
          if (headerOffset === 0xffffffff) headerOffset = next('header offset');
        }
        extra += 4 + length;
      }
      if (headerOffset + LOCAL_HEADER_SIZE + compressedSize > directoryOffset) {
        fail(`member "${name}" claims ${compressedSize} bytes at ${headerOffset}, past the member data`);
      }
      if (method === 0 && compressedSize !== size) fail(`stored member "${name}" has two different sizes`);
      if (method !== 0 && method !== 8) fail(`member "${name}" uses unsupported compression method ${method}`);
      if (members.has(name)) fail(`member "${name}" appears twice`);
      members.set(name, { name, method, compressedSize, size, headerOffset });
      at = end;
    }
    checkNoOverlap([...members.values()], fail);
    return new ZipArchive(source, members);
  }

  /** The member's bytes as a source. Its local header is checked against the central directory. */
  async member(name: string): Promise<ByteSource> {
    const { member, data } = await this.locate(name);
    if (member.method === 0) return data;
    if (member.size > MAX_INFLATED_MEMBER) {
      throw new CheckpointError(this.source.name, `compressed member "${name}" (${member.size} bytes) is too large to inflate`);
    }
    const compressed = await data.read(0, member.compressedSize);
    let inflated: Buffer;
    try {
      inflated = inflateRawSync(compressed, { maxOutputLength: Math.max(1, member.size) });
    } catch (error) {
      throw new CheckpointError(this.source.name, `compressed member "${name}" is damaged: ${(error as Error).message}`);
    }
    if (inflated.length !== member.size) {
      throw new CheckpointError(this.source.name, `compressed member "${name}" inflates to ${inflated.length} bytes, not ${member.size}`);
    }
    return new BufferSource(inflated, label(this.source, name));
  }

  /**
   * The first `length` bytes of a member (fewer if the member is shorter). A deflated member
   * is inflated only as far as that takes, so the header of a large compressed array is read
   * without inflating the array.
   */
  async memberPrefix(name: string, length: number): Promise<Buffer> {
    const { member, data } = await this.locate(name);
    const wanted = Math.min(length, member.size);
    if (member.method === 0) return data.read(0, wanted);
    let window = Math.min(PREFIX_WINDOW, member.compressedSize);
    for (;;) {
      const compressed = await data.read(0, window);
      let inflated: Buffer;
      try {
        // A sync flush returns what the partial stream holds instead of failing at its cut end;
        // the output cap keeps a hostile window from inflating past what the member declares.
        inflated = inflateRawSync(compressed, {
          finishFlush: zlibConstants.Z_SYNC_FLUSH,
          maxOutputLength: Math.max(1, Math.min(member.size, MAX_BUFFER_LENGTH)),
        });
      } catch (error) {
        throw new CheckpointError(this.source.name, `compressed member "${name}" is damaged: ${(error as Error).message}`);
      }
      if (inflated.length >= wanted) return inflated.subarray(0, wanted);
      if (window === member.compressedSize) {
        throw new CheckpointError(this.source.name, `compressed member "${name}" inflates to ${inflated.length} bytes, not ${member.size}`);
      }
      window = Math.min(window * 4, member.compressedSize);
    }
  }

  /** Finds a member's data, checking its local header against the central directory. */
  private async locate(name: string): Promise<{ member: ZipMember; data: ByteSource }> {
    const member = this.members.get(name);
    if (!member) throw new CheckpointError(this.source.name, `zip member "${name}" is missing`);
    const header = await this.source.read(member.headerOffset, LOCAL_HEADER_SIZE);
    if (header.readUInt32LE(0) !== LOCAL_SIGNATURE) {
      throw new CheckpointError(this.source.name, `zip member "${name}" has no local header at ${member.headerOffset}`);
    }
    const flags = header.readUInt16LE(6);
    const localCompressed = header.readUInt32LE(18);
    const localSize = header.readUInt32LE(22);
    const sizesDeferred = (flags & 0x8) !== 0 || localCompressed === 0xffffffff;
    if (!sizesDeferred && (localCompressed !== member.compressedSize || localSize !== member.size)) {
      throw new CheckpointError(
        this.source.name,
        `zip member "${name}" lies about its size (local header ${localSize}, directory ${member.size})`,
      );
    }
    const dataOffset = member.headerOffset + LOCAL_HEADER_SIZE + header.readUInt16LE(26) + header.readUInt16LE(28);
    if (dataOffset + member.compressedSize > this.source.size) {
      throw new CheckpointError(this.source.name, `zip member "${name}" runs past the end of the file`);
    }
    return { member, data: this.source.slice(dataOffset, member.compressedSize, label(this.source, name)) };
  }
}

/** How a member is named in messages: the archive, then the member in brackets. */
function label(source: ByteSource, member: string): string {
  return `${source.name}[${member}]`;
}

function safeNumber(value: bigint, what: string, fail: (problem: string) => never): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${what} ${value} is out of range`);
  return Number(value);
}

function checkNoOverlap(members: ZipMember[], fail: (problem: string) => never): void {
  const sorted = [...members].sort((a, b) => a.headerOffset - b.headerOffset);
  for (let i = 1; i < sorted.length; i++) {
    const previous = sorted[i - 1]!;
    if (previous.headerOffset + LOCAL_HEADER_SIZE + previous.compressedSize > sorted[i]!.headerOffset) {
      fail(`members "${previous.name}" and "${sorted[i]!.name}" overlap`);
    }
  }
}
