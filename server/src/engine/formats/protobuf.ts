import { CheckpointError } from '../errors';
import type { ByteSource } from '../io/byteSource';

/**
 * A streaming reader of the protocol buffers wire format over a ByteSource. Messages are
 * walked field by field through a small window of the file; a length-delimited field is
 * reported as a byte range, and the caller decides whether to descend into it, read it, or
 * only remember where it lies. That is what lets an ONNX model of several gigabytes be listed
 * without reading its tensor bytes.
 *
 * Every length is checked against the message that encloses it (and so against the source's
 * size) before anything is read or allocated, nesting is bounded, and an unknown field is
 * skipped by its wire type, so a corrupt or hostile file ends in a CheckpointError.
 */

export type WireType = 'varint' | 'fixed64' | 'bytes' | 'fixed32';

const WIRE_TYPES: readonly (WireType | undefined)[] = ['varint', 'fixed64', 'bytes', undefined, undefined, 'fixed32'];
/** Names of the wire types protobuf defines but ONNX never uses, for messages. */
const GROUP_WIRE_TYPES: ReadonlyMap<number, string> = new Map([
  [3, 'start group'],
  [4, 'end group'],
]);

/** A 64-bit varint takes at most ten bytes. */
export const MAX_VARINT_BYTES = 10;
/** protobuf's own limit on field numbers. */
const MAX_FIELD_NUMBER = 2 ** 29 - 1;
/** Deeper than any real ONNX message (model → graph → node → attribute → ... is six or so). */
const MAX_DEPTH = 64;
const DEFAULT_WINDOW_BYTES = 64 * 1024;

/** A message to walk: the byte range of its fields and how deep it sits. */
export interface ProtoMessage {
  readonly start: number;
  readonly end: number;
  readonly depth: number;
  /** The message's type for error messages, e.g. "GraphProto". */
  readonly what: string;
}

/** One field as it lies in the source. */
export interface ProtoField {
  readonly number: number;
  readonly wireType: WireType;
  /** Offset of the field's tag: the field occupies [start, end). */
  readonly start: number;
  /** Offset of the payload (for a varint, of the varint itself). */
  readonly offset: number;
  /** Bytes of payload: the declared length, 4, 8, or the varint's own length. */
  readonly length: number;
  readonly end: number;
  /** A varint field's value as an unsigned 64-bit integer; 0n for other wire types. */
  readonly varint: bigint;
  /** The message the field belongs to. */
  readonly parent: ProtoMessage;
}

/** Halves of a decoded varint (each an unsigned 32-bit number) and the offset just past it. */
export interface VarintParts {
  low: number;
  high: number;
  next: number;
}

/**
 * Decodes the varint at `offset` into `parts`, reading no further than `end`. Returns false
 * when it runs past `end` or past ten bytes. Written on two 32-bit halves rather than bigint
 * because packed arrays of millions of varints go through it.
 */
export function decodeVarint(bytes: Uint8Array, offset: number, end: number, parts: VarintParts): boolean {
  let low = 0;
  let high = 0;
  for (let index = 0; index < MAX_VARINT_BYTES; index++) {
    const at = offset + index;
    if (at >= end) return false;
    const byte = bytes[at]!;
    const bits = byte & 0x7f;
    const shift = index * 7;
    if (shift < 28) {
      low |= bits << shift;
    } else if (shift === 28) {
      // Byte 5 straddles the halves: 4 bits to the low half, 3 to the high one.
      low |= (bits & 0x0f) << 28;
      high |= bits >>> 4;
    } else {
      high |= bits << (shift - 32);
    }
    if (byte < 0x80) {
      parts.low = low >>> 0;
      parts.high = high >>> 0;
      parts.next = at + 1;
      return true;
    }
  }
  return false;
}

/** The unsigned value of `parts`, exact below 2^53. */
export function unsignedOf(parts: VarintParts): number {
  return parts.high * 2 ** 32 + parts.low;
}

/** An int64 varint as a bigint, for fields (dims, versions) where the exact value matters. */
export function int64OfVarint(value: bigint): bigint {
  return BigInt.asIntN(64, value);
}

/** An int32 or enum field: protobuf sign-extends them to 64 bits on the wire, so the low 32 bits are the value. */
export function int32OfVarint(value: bigint): number {
  return Number(BigInt.asIntN(32, value));
}

/**
 * Walks messages of one source. Reads go through a window of the source so that the many
 * small fields of a header cost few reads; a field's payload is never read unless asked for.
 */
export class ProtoReader {
  private window: Buffer = Buffer.alloc(0);
  private windowStart = 0;
  private readonly parts: VarintParts = { low: 0, high: 0, next: 0 };

  constructor(
    readonly source: ByteSource,
    private readonly windowBytes = DEFAULT_WINDOW_BYTES,
  ) {}

  /** The whole source as one message of type `what`. */
  root(what: string): ProtoMessage {
    return { start: 0, end: this.source.size, depth: 0, what };
  }

  /** The message carried by a length-delimited field. */
  message(field: ProtoField, what: string): ProtoMessage {
    this.expectWireType(field, 'bytes');
    if (field.parent.depth + 1 > MAX_DEPTH) this.fail(field.parent, `messages nest deeper than ${MAX_DEPTH} levels`);
    return { start: field.offset, end: field.end, depth: field.parent.depth + 1, what };
  }

  /** The fields of `message` in file order. Each length is checked before the field is yielded. */
  async *fields(message: ProtoMessage): AsyncGenerator<ProtoField> {
    let position = message.start;
    while (position < message.end) {
      const field = await this.fieldAt(position, message);
      yield field;
      position = field.end;
    }
  }

  /** The payload of a length-delimited field, refused when longer than `maxBytes`. */
  async bytes(field: ProtoField, maxBytes: number): Promise<Buffer> {
    this.expectWireType(field, 'bytes');
    if (field.length > maxBytes) {
      this.fail(field.parent, `field ${field.number} holds ${field.length} bytes, more than the ${maxBytes} allowed for it`);
    }
    if (field.length <= this.windowBytes) {
      await this.ensure(field.offset, field.length);
      return this.window.subarray(field.offset - this.windowStart, field.end - this.windowStart);
    }
    return this.source.read(field.offset, field.length);
  }

  /** A string field: UTF-8, as protobuf requires, of at most `maxBytes` bytes. */
  async string(field: ProtoField, maxBytes: number): Promise<string> {
    const bytes = await this.bytes(field, maxBytes);
    try {
      return UTF8.decode(bytes);
    } catch {
      return this.fail(field.parent, `field ${field.number} is not valid UTF-8`);
    }
  }

  /** Refuses a field whose wire type is not the one its schema declares. */
  expectWireType(field: ProtoField, wireType: WireType): void {
    if (field.wireType !== wireType) {
      this.fail(field.parent, `field ${field.number} has wire type ${field.wireType} where ${wireType} is expected`);
    }
  }

  fail(message: ProtoMessage, problem: string): never {
    throw new CheckpointError(this.source.name, `${message.what} at byte ${message.start}: ${problem}`);
  }

  private async fieldAt(position: number, message: ProtoMessage): Promise<ProtoField> {
    const parts = this.parts;
    // Tag and a varint or length: at most two varints.
    await this.ensure(position, Math.min(2 * MAX_VARINT_BYTES, message.end - position));
    const window = this.window;
    const base = this.windowStart;
    // Ensured above: the window holds the tag and length, or everything up to the message's end.
    const windowEnd = Math.min(message.end - base, window.length);
    if (!decodeVarint(window, position - base, windowEnd, parts)) {
      this.fail(message, `field tag at byte ${position} runs past the end of the message: truncated or corrupt`);
    }
    const tag = unsignedOf(parts);
    const number = Math.floor(tag / 8);
    const wireCode = tag % 8;
    const wireType = WIRE_TYPES[wireCode];
    if (number === 0 || number > MAX_FIELD_NUMBER) this.fail(message, `invalid field number ${number} at byte ${position}`);
    if (wireType === undefined) {
      const kind = GROUP_WIRE_TYPES.get(wireCode);
      this.fail(message, `field ${number} at byte ${position} has ${kind ? `wire type ${kind}, which ONNX never uses` : `invalid wire type ${wireCode}`}`);
    }
    const afterTag = base + parts.next;
    let offset = afterTag;
    let length: number;
    let varint = 0n;
    switch (wireType) {
      case 'varint':
        if (!decodeVarint(window, afterTag - base, windowEnd, parts)) {
          this.fail(message, `varint field ${number} at byte ${position} is truncated or longer than ${MAX_VARINT_BYTES} bytes`);
        }
        length = base + parts.next - afterTag;
        varint = (BigInt(parts.high) << 32n) | BigInt(parts.low);
        break;
      case 'fixed64':
        length = 8;
        break;
      case 'fixed32':
        length = 4;
        break;
      case 'bytes': {
        if (!decodeVarint(window, afterTag - base, windowEnd, parts)) {
          this.fail(message, `length of field ${number} at byte ${position} is truncated or corrupt`);
        }
        offset = base + parts.next;
        const declared = unsignedOf(parts);
        if (declared > message.end - offset) {
          this.fail(
            message,
            `field ${number} at byte ${position} declares ${declared} bytes but only ${message.end - offset} remain in the message: truncated or corrupt`,
          );
        }
        length = declared;
        break;
      }
    }
    const end = offset + length;
    if (end > message.end) {
      this.fail(message, `field ${number} at byte ${position} runs past the end of the message: truncated or corrupt`);
    }
    return { number, wireType, start: position, offset, length, end, varint, parent: message };
  }

  /** Makes the window cover [offset, offset + length), reading ahead a window's worth. */
  private async ensure(offset: number, length: number): Promise<void> {
    const windowEnd = this.windowStart + this.window.length;
    if (offset >= this.windowStart && offset + length <= windowEnd) return;
    const span = Math.min(Math.max(length, this.windowBytes), this.source.size - offset);
    this.window = await this.source.read(offset, span);
    this.windowStart = offset;
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Yields the values of a packed varint array lying in `bytes`; throws `fail` on a malformed one. */
export function* packedVarints(bytes: Uint8Array, fail: () => never): Generator<VarintParts> {
  const parts: VarintParts = { low: 0, high: 0, next: 0 };
  let position = 0;
  while (position < bytes.length) {
    if (!decodeVarint(bytes, position, bytes.length, parts)) fail();
    position = parts.next;
    yield parts;
  }
}

// ---------------------------------------------------------------------------------------
// Writing, for code that edits a message's bytes

const WIRE_CODES: Readonly<Record<WireType, number>> = { varint: 0, fixed64: 1, bytes: 2, fixed32: 5 };

/** A non-negative integer as a varint. */
export function encodeVarint(value: number | bigint): Buffer {
  let remaining = BigInt(value);
  if (remaining < 0n) throw new RangeError(`cannot encode ${value} as an unsigned varint`);
  const bytes: number[] = [];
  while (remaining >= 0x80n) {
    bytes.push(Number(remaining & 0x7fn) | 0x80);
    remaining >>= 7n;
  }
  bytes.push(Number(remaining));
  return Buffer.from(bytes);
}

function encodeTag(number: number, wireType: WireType): Buffer {
  return encodeVarint(number * 8 + WIRE_CODES[wireType]);
}

export function encodeVarintField(number: number, value: number | bigint): Buffer {
  return Buffer.concat([encodeTag(number, 'varint'), encodeVarint(value)]);
}

/** A length-delimited field: a string (as UTF-8), bytes, or the concatenated fields of a message. */
export function encodeBytesField(number: number, payload: string | Uint8Array | readonly Uint8Array[]): Buffer {
  const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload instanceof Uint8Array ? payload : Buffer.concat(payload);
  return Buffer.concat([encodeTag(number, 'bytes'), encodeVarint(bytes.length), bytes]);
}
