import { CheckpointError } from '../errors';
import type { ByteSource } from '../io/byteSource';

/**
 * A small reader of FlatBuffers tables (https://flatbuffers.dev/internals/) over a
 * ByteSource, for formats such as TFLite whose index is a flatbuffer. Nothing is trusted:
 *
 * - every offset is checked against the source before it is followed, and a reference
 *   (uoffset) must be non-zero and below 2^31, as the reference verifier requires, so each
 *   one points strictly forward: a chain of references cannot loop back on itself;
 * - a vtable must lie inside the source, be at least 4 bytes and even, and a field may not
 *   reach past its table's inline size;
 * - tables nest at most `maxDepth` levels;
 * - a vector's declared length must fit in the bytes after it;
 * - the bytes read in total are bounded by a budget proportional to the source's size, so
 *   a file whose tables all point at one huge vector cannot make a reader loop for hours.
 *
 * Bytes are read through a small page cache: a table's fields, its vtable and the vectors
 * it points to usually share a page, and the data vectors themselves are never read here.
 */

/** Tables nest this deep at most unless the caller asks otherwise; TFLite nests five levels. */
export const DEFAULT_MAX_DEPTH = 64;
/** Longest string a reader decodes; names in real files are far shorter. */
export const MAX_STRING_BYTES = 1024 * 1024;

const UOFFSET_BYTES = 4;
/** A reference must be below 2^31: the reference verifier treats it as a signed value. */
const MAX_UOFFSET = 0x7fffffff;
const VTABLE_HEADER_BYTES = 4;
const IDENTIFIER_AT = 4;
const IDENTIFIER_BYTES = 4;

const PAGE_BYTES = 4096;
const MAX_CACHED_PAGES = 1024;
/** Reads at least this long skip the cache: they are vectors read once. */
const UNCACHED_READ_BYTES = 64 * 1024;
/**
 * Bytes read may total this many times the source's size, plus READ_BUDGET_BASE. Reading a
 * well-formed file's tables costs a few times their size (small reads are charged
 * READ_COST_BYTES extra), and its data vectors are not read here at all.
 */
const READ_BUDGET_FACTOR = 16;
const READ_BUDGET_BASE = 16 * 1024 * 1024;
/** What each read costs beyond its bytes, so many tiny reads exhaust the budget too. */
const READ_COST_BYTES = 16;

/** Element types of scalar vectors and the widths they occupy. */
const SCALAR_WIDTH = { uint8: 1, int8: 1, uint16: 2, int16: 2, uint32: 4, int32: 4, float32: 4, int64: 8, uint64: 8, float64: 8 } as const;
export type ScalarKind = keyof typeof SCALAR_WIDTH;

export interface FlatBufferOptions {
  readonly maxDepth?: number;
}

/** Where a vector's elements lie in the source, without reading them. */
export interface VectorLocation {
  /** Source offset of the first element. */
  readonly start: number;
  readonly length: number;
}

export class FlatBuffer {
  private readonly pages = new Map<number, Promise<Buffer>>();
  private budgetLeft: number;

  private constructor(
    readonly source: ByteSource,
    readonly maxDepth: number,
  ) {
    this.budgetLeft = READ_BUDGET_FACTOR * source.size + READ_BUDGET_BASE;
  }

  /**
   * Opens a flatbuffer that starts at offset 0 of `source`. With `identifier`, the four
   * bytes after the root offset must equal it (TFLite: "TFL3").
   */
  static async open(source: ByteSource, identifier?: string, options: FlatBufferOptions = {}): Promise<FlatBuffer> {
    const buffer = new FlatBuffer(source, options.maxDepth ?? DEFAULT_MAX_DEPTH);
    const headerBytes = identifier === undefined ? UOFFSET_BYTES : IDENTIFIER_AT + IDENTIFIER_BYTES;
    if (source.size < headerBytes) buffer.fail(`only ${source.size} bytes: too short for a flatbuffer header`);
    if (identifier !== undefined) {
      const found = (await buffer.bytes(IDENTIFIER_AT, IDENTIFIER_BYTES)).toString('latin1');
      if (found !== identifier) buffer.fail(`file identifier is ${JSON.stringify(found)}, not "${identifier}"`);
    }
    return buffer;
  }

  /** The root table, which the offset at byte 0 points to. */
  async root(): Promise<FlatTable> {
    return FlatTable.load(this, await this.reference(0, 'the root offset'), 0);
  }

  fail(problem: string): never {
    throw new CheckpointError(this.source.name, `flatbuffer: ${problem}`);
  }

  /** `length` bytes at `offset`; a range outside the source is a CheckpointError saying what was being read. */
  async bytes(offset: number, length: number, what = 'data'): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.source.size) {
      this.fail(`${what} at bytes ${offset}..${offset + length} lies outside the ${this.source.size}-byte file`);
    }
    this.budgetLeft -= length + READ_COST_BYTES;
    if (this.budgetLeft < 0) this.fail('its tables refer to the same bytes too many times (read budget exhausted)');
    if (length === 0) return Buffer.alloc(0);
    if (length >= UNCACHED_READ_BYTES) return this.source.read(offset, length);
    const first = Math.floor(offset / PAGE_BYTES);
    const last = Math.floor((offset + length - 1) / PAGE_BYTES);
    if (first === last) {
      const page = await this.page(first);
      const at = offset - first * PAGE_BYTES;
      return page.subarray(at, at + length);
    }
    const parts: Buffer[] = [];
    for (let index = first; index <= last; index++) parts.push(await this.page(index));
    const joined = Buffer.concat(parts);
    const at = offset - first * PAGE_BYTES;
    return joined.subarray(at, at + length);
  }

  async uint32(offset: number, what: string): Promise<number> {
    return (await this.bytes(offset, 4, what)).readUInt32LE(0);
  }

  /** Follows the reference stored at `at`: a non-zero forward offset to a position inside the source. */
  async reference(at: number, what: string): Promise<number> {
    const relative = await this.uint32(at, what);
    if (relative === 0) this.fail(`${what} at byte ${at} is 0, which would point at itself`);
    if (relative > MAX_UOFFSET) this.fail(`${what} at byte ${at} is ${relative}, beyond the 2^31 limit on offsets`);
    const target = at + relative;
    if (target >= this.source.size) this.fail(`${what} at byte ${at} points to byte ${target}, past the end of the ${this.source.size}-byte file`);
    return target;
  }

  /** The vector whose length prefix is at `at`, checked to fit the source for elements of `width` bytes. */
  async vectorAt(at: number, width: number, what: string): Promise<VectorLocation> {
    const length = await this.uint32(at, `the length of ${what}`);
    const start = at + UOFFSET_BYTES;
    if (start + length * width > this.source.size) {
      this.fail(`${what} at byte ${at} declares ${length} elements of ${width} bytes, more than the ${this.source.size - start} bytes after it`);
    }
    return { start, length };
  }

  private page(index: number): Promise<Buffer> {
    let page = this.pages.get(index);
    if (page === undefined) {
      const start = index * PAGE_BYTES;
      page = this.source.read(start, Math.min(PAGE_BYTES, this.source.size - start));
      if (this.pages.size >= MAX_CACHED_PAGES) this.pages.delete(this.pages.keys().next().value!);
      this.pages.set(index, page);
    } else {
      // Re-inserting keeps the map in least-recently-used order.
      this.pages.delete(index);
      this.pages.set(index, page);
    }
    return page;
  }
}

/** One table: its vtable and inline fields are read when it is loaded; referenced objects when asked for. */
export class FlatTable {
  private constructor(
    private readonly buffer: FlatBuffer,
    readonly position: number,
    readonly depth: number,
    /** The vtable's field entries (after its two-u16 header). */
    private readonly fieldOffsets: Buffer,
    /** The table's inline bytes, starting with its vtable offset. */
    private readonly inline: Buffer,
  ) {}

  static async load(buffer: FlatBuffer, position: number, depth: number): Promise<FlatTable> {
    if (depth > buffer.maxDepth) buffer.fail(`tables nest deeper than ${buffer.maxDepth} levels (at byte ${position})`);
    const vtableDistance = (await buffer.bytes(position, 4, 'a table')).readInt32LE(0);
    const vtable = position - vtableDistance;
    if (vtable < 0 || vtable + VTABLE_HEADER_BYTES > buffer.source.size) {
      buffer.fail(`the vtable of the table at byte ${position} would lie at byte ${vtable}, outside the file`);
    }
    const header = await buffer.bytes(vtable, VTABLE_HEADER_BYTES, 'a vtable header');
    const vtableSize = header.readUInt16LE(0);
    const tableSize = header.readUInt16LE(2);
    if (vtableSize < VTABLE_HEADER_BYTES || vtableSize % 2 !== 0) {
      buffer.fail(`the vtable at byte ${vtable} declares ${vtableSize} bytes, not an even number of at least ${VTABLE_HEADER_BYTES}`);
    }
    if (tableSize < 4) buffer.fail(`the table at byte ${position} declares ${tableSize} inline bytes, too few for its vtable offset`);
    const fieldOffsets = await buffer.bytes(vtable + VTABLE_HEADER_BYTES, vtableSize - VTABLE_HEADER_BYTES, `the vtable at byte ${vtable}`);
    const inline = await buffer.bytes(position, tableSize, `the table at byte ${position}`);
    return new FlatTable(buffer, position, depth, fieldOffsets, inline);
  }

  has(slot: number): boolean {
    return this.fieldOffset(slot) !== 0;
  }

  bool(slot: number, defaultValue = false): boolean {
    const at = this.inlineAt(slot, 1);
    return at === undefined ? defaultValue : this.inline[at] !== 0;
  }

  int8(slot: number, defaultValue = 0): number {
    const at = this.inlineAt(slot, 1);
    return at === undefined ? defaultValue : this.inline.readInt8(at);
  }

  uint8(slot: number, defaultValue = 0): number {
    const at = this.inlineAt(slot, 1);
    return at === undefined ? defaultValue : this.inline.readUInt8(at);
  }

  int32(slot: number, defaultValue = 0): number {
    const at = this.inlineAt(slot, 4);
    return at === undefined ? defaultValue : this.inline.readInt32LE(at);
  }

  uint32(slot: number, defaultValue = 0): number {
    const at = this.inlineAt(slot, 4);
    return at === undefined ? defaultValue : this.inline.readUInt32LE(at);
  }

  /** A 64-bit unsigned field as a number; values past 2^53 are refused rather than rounded. */
  uint64(slot: number, defaultValue = 0): number {
    const at = this.inlineAt(slot, 8);
    if (at === undefined) return defaultValue;
    const value = this.inline.readBigUInt64LE(at);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) this.buffer.fail(`field ${slot} of the table at byte ${this.position} is ${value}, too large`);
    return Number(value);
  }

  async table(slot: number, what: string): Promise<FlatTable | undefined> {
    const at = this.referenceAt(slot);
    if (at === undefined) return undefined;
    return FlatTable.load(this.buffer, await this.buffer.reference(at, what), this.depth + 1);
  }

  /** A string, decoded as UTF-8 (malformed bytes become U+FFFD: names are for display). */
  async string(slot: number, what: string): Promise<string | undefined> {
    const at = this.referenceAt(slot);
    if (at === undefined) return undefined;
    const { start, length } = await this.buffer.vectorAt(await this.buffer.reference(at, what), 1, what);
    if (length > MAX_STRING_BYTES) this.buffer.fail(`${what} is ${length} bytes long, over the ${MAX_STRING_BYTES}-byte limit`);
    return (await this.buffer.bytes(start, length, what)).toString('utf8');
  }

  /** A vector of scalars, refused when longer than `maxLength` (the caller knows what is plausible). */
  async scalars(slot: number, kind: ScalarKind, maxLength: number, what: string): Promise<number[] | undefined> {
    const location = await this.vector(slot, SCALAR_WIDTH[kind], what);
    if (location === undefined) return undefined;
    if (location.length > maxLength) this.buffer.fail(`${what} has ${location.length} elements, more than the ${maxLength} expected`);
    const bytes = await this.buffer.bytes(location.start, location.length * SCALAR_WIDTH[kind], what);
    return decodeScalars(bytes, kind, () => this.buffer.fail(`${what}: an element is too large to be represented exactly`));
  }

  /** Where a vector's elements lie, checked to fit the source; nothing of them is read. */
  async vector(slot: number, width: number, what: string): Promise<VectorLocation | undefined> {
    const at = this.referenceAt(slot);
    if (at === undefined) return undefined;
    return this.buffer.vectorAt(await this.buffer.reference(at, what), width, what);
  }

  async tables(slot: number, what: string): Promise<FlatTableVector | undefined> {
    const location = await this.vector(slot, UOFFSET_BYTES, what);
    return location && new FlatTableVector(this.buffer, location, this.depth + 1, what);
  }

  /** Source offset of a present field holding a reference, checked to lie inside the table. */
  private referenceAt(slot: number): number | undefined {
    const at = this.inlineAt(slot, UOFFSET_BYTES);
    return at === undefined ? undefined : this.position + at;
  }

  /** Offset within the table of a present field of `width` bytes, checked against the table's size. */
  private inlineAt(slot: number, width: number): number | undefined {
    const offset = this.fieldOffset(slot);
    if (offset === 0) return undefined;
    if (offset < 4 || offset + width > this.inline.length) {
      this.buffer.fail(
        `field ${slot} of the table at byte ${this.position} lies at ${offset}..${offset + width}, outside its ${this.inline.length} inline bytes`,
      );
    }
    return offset;
  }

  /** The vtable entry for `slot`; 0 means absent, as does a slot past the vtable's end. */
  private fieldOffset(slot: number): number {
    const at = slot * 2;
    return at + 2 <= this.fieldOffsets.length ? this.fieldOffsets.readUInt16LE(at) : 0;
  }
}

/** A vector of tables; each table is loaded only when asked for. */
export class FlatTableVector {
  readonly length: number;

  constructor(
    private readonly buffer: FlatBuffer,
    private readonly location: VectorLocation,
    private readonly depth: number,
    private readonly what: string,
  ) {
    this.length = location.length;
  }

  async get(index: number): Promise<FlatTable> {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) {
      this.buffer.fail(`${this.what}: index ${index} is outside its ${this.length} entries`);
    }
    const at = this.location.start + index * UOFFSET_BYTES;
    return FlatTable.load(this.buffer, await this.buffer.reference(at, `${this.what}[${index}]`), this.depth);
  }
}

/** Little-endian scalars as numbers; 64-bit integers beyond 2^53 are refused rather than rounded. */
function decodeScalars(bytes: Buffer, kind: ScalarKind, tooLarge: () => never): number[] {
  // A copy is aligned for the typed array whatever the offset of `bytes`.
  const copy = new Uint8Array(bytes.length);
  copy.set(bytes);
  const aligned = copy.buffer;
  const typed = {
    uint8: () => copy,
    int8: () => new Int8Array(aligned),
    uint16: () => new Uint16Array(aligned),
    int16: () => new Int16Array(aligned),
    uint32: () => new Uint32Array(aligned),
    int32: () => new Int32Array(aligned),
    float32: () => new Float32Array(aligned),
    float64: () => new Float64Array(aligned),
    int64: () => new BigInt64Array(aligned),
    uint64: () => new BigUint64Array(aligned),
  }[kind]();
  const values = new Array<number>(typed.length);
  // Plain loops: Array.from over a typed array is many times slower.
  if (typed instanceof BigInt64Array || typed instanceof BigUint64Array) {
    for (let i = 0; i < typed.length; i++) {
      const value = typed[i]!;
      if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) return tooLarge();
      values[i] = Number(value);
    }
  } else {
    for (let i = 0; i < typed.length; i++) values[i] = typed[i]!;
  }
  return values;
}
