/**
 * A minimal FlatBuffers builder and TFLite model writer for tests, from the FlatBuffers
 * encoding (https://flatbuffers.dev/internals/) and tensorflow/lite/schema/schema.fbs.
 *
 * The builder writes front to back: the header, then objects breadth first, each table
 * preceded by its vtable and followed later by the objects it refers to, so every
 * reference points forward as the format requires. An object used twice is written once.
 * It returns where each table and field landed, so tests can damage a chosen spot.
 */

// ---------------------------------------------------------------------------------------
// FlatBuffers

type ScalarType = 'bool' | 'int8' | 'uint8' | 'int32' | 'uint32' | 'uint64' | 'int64' | 'float32';

const SCALAR_WIDTHS: Readonly<Record<ScalarType, number>> = { bool: 1, int8: 1, uint8: 1, int32: 4, uint32: 4, uint64: 8, int64: 8, float32: 4 };

export interface FbTable {
  readonly kind: 'table';
  /** Field by slot; undefined leaves the slot absent. */
  readonly fields: readonly (FbField | undefined)[];
}

type FbObject =
  | FbTable
  | { readonly kind: 'string'; readonly value: string }
  | { readonly kind: 'scalars'; readonly type: ScalarType; readonly values: readonly (number | bigint)[] }
  | { readonly kind: 'bytes'; readonly data: Buffer; readonly align: number }
  | { readonly kind: 'tables'; readonly tables: readonly FbTable[] };

export type FbField = { readonly kind: 'scalar'; readonly type: ScalarType; readonly value: number | bigint | boolean } | { readonly kind: 'ref'; readonly target: FbObject };

export const fb = {
  table: (...fields: (FbField | undefined)[]): FbTable => ({ kind: 'table', fields }),
  scalar: (type: ScalarType, value: number | bigint | boolean): FbField => ({ kind: 'scalar', type, value }),
  ref: (target: FbTable): FbField => ({ kind: 'ref', target }),
  string: (value: string): FbField => ({ kind: 'ref', target: { kind: 'string', value } }),
  scalars: (type: ScalarType, values: readonly (number | bigint)[]): FbField => ({ kind: 'ref', target: { kind: 'scalars', type, values } }),
  bytes: (data: Buffer, align = 16): FbField => ({ kind: 'ref', target: { kind: 'bytes', data, align } }),
  tables: (tables: readonly FbTable[]): FbField => ({ kind: 'ref', target: { kind: 'tables', tables } }),
};

export interface FbLayout {
  readonly bytes: Buffer;
  /** Position of every table written. */
  readonly tables: ReadonlyMap<FbTable, number>;
  /** Absolute position of a table's field (for a reference: where its offset is stored). */
  fieldAt(table: FbTable, slot: number): number;
}

export function buildFlatBuffer(root: FbTable, identifier: string): FbLayout {
  const out = new Writer();
  out.reserve(8);
  out.bytes.write(identifier, 4, 'latin1');
  const positions = new Map<FbObject, number>();
  const fieldOffsets = new Map<FbTable, Map<number, number>>();
  const referrers = new Map<FbObject, number[]>();
  const queue: FbObject[] = [];
  const refer = (target: FbObject, at: number): void => {
    if (positions.has(target)) throw new Error('the builder writes objects in breadth-first order: this reference would point backwards');
    const list = referrers.get(target);
    if (list) {
      list.push(at);
      return;
    }
    referrers.set(target, [at]);
    queue.push(target);
  };

  refer(root, 0);
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    const position = writeObject(out, next, refer, fieldOffsets);
    positions.set(next, position);
    for (const at of referrers.get(next)!) out.bytes.writeUInt32LE(position - at, at);
  }
  const bytes = out.finish();
  const tables = new Map([...positions].filter((entry): entry is [FbTable, number] => entry[0].kind === 'table'));
  return {
    bytes,
    tables,
    fieldAt(table, slot) {
      const offset = fieldOffsets.get(table)?.get(slot);
      if (offset === undefined) throw new Error(`slot ${slot} is not written`);
      return tables.get(table)! + offset;
    },
  };
}

function writeObject(
  out: Writer,
  object: FbObject,
  refer: (target: FbObject, at: number) => void,
  fieldOffsets: Map<FbTable, Map<number, number>>,
): number {
  switch (object.kind) {
    case 'string': {
      const text = Buffer.from(object.value, 'utf8');
      const at = out.align(4);
      out.uint32(text.length);
      out.append(text);
      out.append(Buffer.alloc(1)); // the terminating NUL the format keeps after every string
      return at;
    }
    case 'scalars': {
      const width = SCALAR_WIDTHS[object.type];
      const at = out.alignBefore(4, Math.max(width, 4));
      out.uint32(object.values.length);
      for (const value of object.values) out.scalar(object.type, value);
      return at;
    }
    case 'bytes': {
      const at = out.alignBefore(4, object.align);
      out.uint32(object.data.length);
      out.append(object.data);
      return at;
    }
    case 'tables': {
      const at = out.align(4);
      out.uint32(object.tables.length);
      object.tables.forEach((table, i) => refer(table, at + 4 + 4 * i));
      out.reserve(4 * object.tables.length);
      return at;
    }
    case 'table':
      return writeTable(out, object, refer, fieldOffsets);
  }
}

function writeTable(
  out: Writer,
  table: FbTable,
  refer: (target: FbObject, at: number) => void,
  fieldOffsets: Map<FbTable, Map<number, number>>,
): number {
  // Inline layout: the vtable offset, then each present field aligned to its width.
  const offsets = new Map<number, number>();
  let size = 4;
  table.fields.forEach((field, slot) => {
    if (!field) return;
    const width = field.kind === 'scalar' ? SCALAR_WIDTHS[field.type] : 4;
    size = Math.ceil(size / width) * width;
    offsets.set(slot, size);
    size += width;
  });
  const vtableAt = out.align(2);
  out.uint16(4 + 2 * table.fields.length);
  out.uint16(size);
  table.fields.forEach((_, slot) => out.uint16(offsets.get(slot) ?? 0));
  const tableAt = out.align(8);
  out.reserve(size);
  out.bytes.writeInt32LE(tableAt - vtableAt, tableAt);
  table.fields.forEach((field, slot) => {
    if (!field) return;
    const at = tableAt + offsets.get(slot)!;
    if (field.kind === 'scalar') out.scalarAt(field.type, field.value, at);
    else refer(field.target, at);
  });
  fieldOffsets.set(table, offsets);
  return tableAt;
}

/** A growable little-endian byte buffer. */
class Writer {
  bytes = Buffer.alloc(1024);
  length = 0;

  reserve(count: number): number {
    const at = this.length;
    this.grow(count);
    this.length += count;
    return at;
  }

  // Each writer reserves before touching `bytes`: reserving may replace the buffer.
  append(data: Buffer): void {
    const at = this.reserve(data.length);
    data.copy(this.bytes, at);
  }

  /** Pads to a multiple of `alignment`; returns the new end. */
  align(alignment: number): number {
    this.reserve((alignment - (this.length % alignment)) % alignment);
    return this.length;
  }

  /** Pads so that the data after a `prefix`-byte header starts on a multiple of `alignment`. */
  alignBefore(prefix: number, alignment: number): number {
    this.reserve((alignment - ((this.length + prefix) % alignment)) % alignment);
    return this.length;
  }

  uint16(value: number): void {
    const at = this.reserve(2);
    this.bytes.writeUInt16LE(value, at);
  }

  uint32(value: number): void {
    const at = this.reserve(4);
    this.bytes.writeUInt32LE(value, at);
  }

  scalar(type: ScalarType, value: number | bigint | boolean): void {
    const at = this.reserve(SCALAR_WIDTHS[type]);
    this.scalarAt(type, value, at);
  }

  scalarAt(type: ScalarType, value: number | bigint | boolean, at: number): void {
    switch (type) {
      case 'bool': this.bytes.writeUInt8(value ? 1 : 0, at); break;
      case 'int8': this.bytes.writeInt8(Number(value), at); break;
      case 'uint8': this.bytes.writeUInt8(Number(value), at); break;
      case 'int32': this.bytes.writeInt32LE(Number(value), at); break;
      case 'uint32': this.bytes.writeUInt32LE(Number(value), at); break;
      case 'float32': this.bytes.writeFloatLE(Number(value), at); break;
      case 'uint64': this.bytes.writeBigUInt64LE(BigInt(value), at); break;
      case 'int64': this.bytes.writeBigInt64LE(BigInt(value), at); break;
    }
  }

  finish(): Buffer {
    return Buffer.from(this.bytes.subarray(0, this.length));
  }

  private grow(count: number): void {
    if (this.length + count <= this.bytes.length) return;
    const bigger = Buffer.alloc(Math.max(this.bytes.length * 2, this.length + count));
    this.bytes.copy(bigger);
    this.bytes = bigger;
  }
}

// ---------------------------------------------------------------------------------------
// TFLite

export const TensorType = {
  FLOAT32: 0, FLOAT16: 1, INT32: 2, UINT8: 3, INT64: 4, STRING: 5, BOOL: 6, INT16: 7, COMPLEX64: 8, INT8: 9, FLOAT64: 10, INT4: 17,
} as const;

export const BuiltinOperator = { CONV_2D: 3, FULLY_CONNECTED: 9, RESHAPE: 22, SOFTMAX: 25, CUSTOM: 32, BATCH_MATMUL: 126, GELU: 150, STABLEHLO_ADD: 163, DILATE: 203 } as const;

export interface TfliteQuantization {
  readonly scale: readonly number[];
  readonly zeroPoint: readonly number[];
  readonly axis?: number;
  /** Writes a CustomQuantization in the details union instead of relying on scale and zero point. */
  readonly custom?: Buffer;
}

export interface TfliteTensor {
  readonly name: string;
  readonly shape: readonly number[];
  readonly type: number;
  /** Constant data; without it the tensor is an activation. */
  readonly data?: Buffer;
  /** Share the buffer of the tensor with this name instead of having one's own. */
  readonly sharesBufferWith?: string;
  /** An activation pointing at its own empty buffer, as the MLIR converter writes them, rather than at buffer 0. */
  readonly ownEmptyBuffer?: boolean;
  /** The same object on several tensors is written once and shared. */
  readonly quantization?: TfliteQuantization;
  /** Marks the tensor sparse (an empty SparsityParameters table). */
  readonly sparse?: boolean;
}

export interface TfliteSubgraph {
  readonly name?: string;
  readonly tensors: readonly TfliteTensor[];
  /** Operators as [operator code index, input tensor indices, output tensor indices]. */
  readonly operators?: readonly (readonly [number, readonly number[], readonly number[]])[];
}

export interface TfliteModel {
  readonly subgraphs: readonly TfliteSubgraph[];
  readonly operatorCodes?: readonly { readonly builtin: number; readonly version?: number; readonly custom?: string }[];
  readonly description?: string;
  readonly metadata?: readonly { readonly name: string; readonly data: Buffer }[];
  /**
   * The layout of models over 2 GB: buffers carry `offset` and `size` and their bytes follow
   * the flatbuffer, each aligned to 16 bytes.
   */
  readonly externalBuffers?: boolean;
}

const DATA_ALIGNMENT = 16;
const DEPRECATED_CODE_LIMIT = 127;

export interface TfliteLayout extends FbLayout {
  /** Each written table, for damaging chosen fields. */
  readonly model: FbTable;
  readonly tensorTables: ReadonlyMap<string, FbTable>;
  readonly bufferTables: readonly FbTable[];
}

export function encodeTflite(model: TfliteModel): TfliteLayout {
  const buffers: (Buffer | undefined)[] = [undefined];
  const bufferIndex = new Map<string, number>();
  const tensorBuffers = model.subgraphs.map((subgraph) =>
    subgraph.tensors.map((tensor) => {
      if (tensor.sharesBufferWith !== undefined) return bufferIndex.get(tensor.sharesBufferWith)!;
      if (tensor.data === undefined && !tensor.ownEmptyBuffer) return 0;
      buffers.push(tensor.data);
      bufferIndex.set(tensor.name, buffers.length - 1);
      return buffers.length - 1;
    }),
  );
  const metadataBuffers = (model.metadata ?? []).map((entry) => {
    buffers.push(entry.data);
    return buffers.length - 1;
  });

  // The external layout's offsets depend on the flatbuffer's length, which does not depend on their values.
  const build = (externalOffsets: readonly number[] | undefined): TfliteLayout =>
    assemble(model, tensorBuffers, metadataBuffers, buffers, externalOffsets);
  if (!model.externalBuffers) return build(undefined);
  const draft = build(buffers.map(() => 0));
  const offsets: number[] = [];
  let end = draft.bytes.length;
  for (const data of buffers) {
    if (data === undefined || data.length === 0) {
      offsets.push(0);
      continue;
    }
    end = Math.ceil(end / DATA_ALIGNMENT) * DATA_ALIGNMENT;
    offsets.push(end);
    end += data.length;
  }
  const final = build(offsets);
  const file = Buffer.alloc(end);
  final.bytes.copy(file);
  buffers.forEach((data, i) => data?.copy(file, offsets[i]!));
  return { ...final, bytes: file };
}

function assemble(
  model: TfliteModel,
  tensorBuffers: readonly (readonly number[])[],
  metadataBuffers: readonly number[],
  buffers: readonly (Buffer | undefined)[],
  externalOffsets: readonly number[] | undefined,
): TfliteLayout {
  const quantizationTables = new Map<TfliteQuantization, FbTable>();
  const quantizationTable = (quantization: TfliteQuantization): FbTable => {
    let table = quantizationTables.get(quantization);
    if (!table) {
      table = fb.table(
        undefined,
        undefined,
        fb.scalars('float32', quantization.scale),
        fb.scalars('int64', quantization.zeroPoint.map(BigInt)),
        quantization.custom ? fb.scalar('uint8', 1) : undefined,
        quantization.custom ? fb.ref(fb.table(fb.bytes(quantization.custom))) : undefined,
        fb.scalar('int32', quantization.axis ?? 0),
      );
      quantizationTables.set(quantization, table);
    }
    return table;
  };

  const tensorTables = new Map<string, FbTable>();
  const subgraphs = model.subgraphs.map((subgraph, s) => {
    const tensors = subgraph.tensors.map((tensor, t) => {
      const table = fb.table(
        fb.scalars('int32', tensor.shape),
        fb.scalar('int8', tensor.type),
        fb.scalar('uint32', tensorBuffers[s]![t]!),
        fb.string(tensor.name),
        tensor.quantization ? fb.ref(quantizationTable(tensor.quantization)) : undefined,
        undefined,
        tensor.sparse ? fb.ref(fb.table()) : undefined,
      );
      tensorTables.set(tensor.name, table);
      return table;
    });
    const operators = (subgraph.operators ?? []).map(([opcode, inputs, outputs]) =>
      fb.table(fb.scalar('uint32', opcode), fb.scalars('int32', inputs), fb.scalars('int32', outputs)),
    );
    const activations = subgraph.tensors.flatMap((tensor, t) => (tensor.data === undefined ? [t] : []));
    return fb.table(
      fb.tables(tensors),
      fb.scalars('int32', activations.slice(0, 1)),
      fb.scalars('int32', activations.slice(-1)),
      fb.tables(operators),
      subgraph.name === undefined ? undefined : fb.string(subgraph.name),
    );
  });

  const bufferTables = buffers.map((data, i) => {
    if (externalOffsets) return fb.table(undefined, fb.scalar('uint64', externalOffsets[i]!), fb.scalar('uint64', data?.length ?? 0));
    return data === undefined ? fb.table() : fb.table(fb.bytes(data, DATA_ALIGNMENT));
  });
  const operatorCodes = (model.operatorCodes ?? []).map((code) =>
    fb.table(
      fb.scalar('int8', Math.min(code.builtin, DEPRECATED_CODE_LIMIT)),
      code.custom === undefined ? undefined : fb.string(code.custom),
      fb.scalar('int32', code.version ?? 1),
      fb.scalar('int32', code.builtin),
    ),
  );
  const metadata = (model.metadata ?? []).map((entry, i) => fb.table(fb.string(entry.name), fb.scalar('uint32', metadataBuffers[i]!)));
  const root = fb.table(
    fb.scalar('uint32', 3),
    fb.tables(operatorCodes),
    fb.tables(subgraphs),
    model.description === undefined ? undefined : fb.string(model.description),
    fb.tables(bufferTables),
    undefined,
    fb.tables(metadata),
  );
  return { ...buildFlatBuffer(root, 'TFL3'), model: root, tensorTables, bufferTables };
}

// Element encoders: little-endian bytes for the values given.

export function float32(...values: number[]): Buffer {
  return Buffer.from(new Float32Array(values).buffer);
}

export function float64(...values: number[]): Buffer {
  return Buffer.from(new Float64Array(values).buffer);
}

export function int8(...values: number[]): Buffer {
  return Buffer.from(new Int8Array(values).buffer);
}

export function int16(...values: number[]): Buffer {
  return Buffer.from(new Int16Array(values).buffer);
}

export function int32(...values: number[]): Buffer {
  return Buffer.from(new Int32Array(values).buffer);
}

export function int64(...values: bigint[]): Buffer {
  return Buffer.from(new BigInt64Array(values).buffer);
}

export function uint8(...values: number[]): Buffer {
  return Buffer.from(values);
}

export function uint16(...codes: number[]): Buffer {
  return Buffer.from(new Uint16Array(codes).buffer);
}
