import * as path from 'node:path';
import { CheckpointError } from '../errors';
import { FileSource, RangeCheckedSource, type ByteSource } from '../io/byteSource';
import type { Checkpoint, FormatReader } from './checkpoint';
import { DTYPE_BYTES, type DType } from './dtype';
import { StoredTensor, elementCountOf } from './tensor';
import { ZIP_MAGIC, ZipArchive, type ZipMember } from './zip';

/**
 * NumPy `.npy` (format versions 1, 2 and 3) and `.npz` (a zip of `.npy` members, stored or
 * deflated). The header is a Python dict literal; it is parsed by a small strict parser
 * that accepts only literals, never evaluated. Only numeric and boolean arrays are tensors:
 * object arrays would need pickle, which is never executed, and string, void, datetime and
 * structured arrays are refused with a message that says so. In an `.npz` such members are
 * skipped with a warning and the other arrays are still listed.
 */

const NPY_MAGIC = Buffer.from('\x93NUMPY', 'latin1');
/** Magic, then major and minor version bytes; the header length follows. */
const VERSION_END = NPY_MAGIC.length + 2;
/** numpy's own reader refuses headers past 10 000 bytes by default; this limit is looser but still bounded. */
const MAX_HEADER_BYTES = 1024 * 1024;
/** Deepest nesting the header parser follows; real headers nest two levels. */
const MAX_LITERAL_DEPTH = 32;
const NPY_EXTENSION = '.npy';

export const npyReader: FormatReader = {
  name: 'NumPy .npy',
  sniff: (filePath, head) => hasExtension(filePath, NPY_EXTENSION) || head.subarray(0, NPY_MAGIC.length).equals(NPY_MAGIC),
  open: openNpy,
};

export const npzReader: FormatReader = {
  name: 'NumPy .npz',
  sniff: (filePath, head) => hasExtension(filePath, '.npz') || firstZipMemberIsNpy(head),
  open: openNpz,
};

function hasExtension(filePath: string, extension: string): boolean {
  return filePath.toLowerCase().endsWith(extension);
}

/** A zip whose first local header names a `.npy` member: an npz whatever its file name. */
function firstZipMemberIsNpy(head: Buffer): boolean {
  const NAME_LENGTH_AT = 26;
  const NAME_AT = 30;
  if (head.length < NAME_AT || !head.subarray(0, ZIP_MAGIC.length).equals(ZIP_MAGIC)) return false;
  const nameEnd = NAME_AT + head.readUInt16LE(NAME_LENGTH_AT);
  return nameEnd <= head.length && head.toString('latin1', NAME_AT, nameEnd).endsWith(NPY_EXTENSION);
}

// ---------------------------------------------------------------------------------------
// Readers

async function openNpy(filePath: string): Promise<Checkpoint> {
  const file = await FileSource.open(filePath);
  try {
    const header = await readNpyHeader((length) => file.read(0, length), file.size, filePath);
    const tensor = tensorOf(path.parse(filePath).name, header, file);
    return { path: filePath, format: 'npy', metadata: {}, tensors: [tensor], warnings: [], close: () => file.close() };
  } catch (error) {
    await file.close();
    throw error;
  }
}

async function openNpz(filePath: string): Promise<Checkpoint> {
  const file = await FileSource.open(filePath);
  try {
    const archive = await ZipArchive.open(file);
    const inflated = new InflatedMembers(archive);
    const tensors: StoredTensor[] = [];
    const warnings: string[] = [];
    for (const member of archive.members.values()) {
      if (!member.name.endsWith(NPY_EXTENSION)) {
        warnings.push(`member "${member.name}" is not a .npy array; it is skipped`);
        continue;
      }
      const label = `${filePath}[${member.name}]`;
      try {
        const { source, readPrefix } = await accessMember(archive, inflated, member, label);
        const header = await readNpyHeader(readPrefix, member.size, label);
        tensors.push(tensorOf(member.name.slice(0, -NPY_EXTENSION.length), header, source));
      } catch (error) {
        if (!(error instanceof UnsupportedArrayError)) throw error;
        warnings.push(`member "${member.name}" is skipped: ${error.problem}`);
      }
    }
    return { path: filePath, format: 'npz', metadata: {}, tensors, warnings, close: () => file.close() };
  } catch (error) {
    await file.close();
    throw error;
  }
}

/**
 * A member's bytes, and a cheap way to its first bytes. A stored member is a lazy slice of
 * the file; a deflated one is inflated only as far as its header while listing, and wholly
 * only when its values are read.
 */
async function accessMember(
  archive: ZipArchive,
  inflated: InflatedMembers,
  member: ZipMember,
  label: string,
): Promise<{ source: ByteSource; readPrefix: (length: number) => Promise<Buffer> }> {
  if (member.method === 0) {
    const source = await archive.member(member.name);
    return { source, readPrefix: (length) => source.read(0, length) };
  }
  return {
    source: new InflatedMemberSource(inflated, member.name, label, member.size),
    readPrefix: (length) => archive.memberPrefix(member.name, length),
  };
}

function tensorOf(name: string, header: NpyHeader, source: ByteSource): StoredTensor {
  const storage = source.slice(header.dataOffset, header.byteSize);
  const strides = header.fortranOrder ? columnMajorStrides(header.shape) : undefined;
  return new StoredTensor(name, header.dtype, header.shape, storage, header.littleEndian, 0, strides);
}

function columnMajorStrides(shape: readonly number[]): number[] {
  let stride = 1;
  return shape.map((size) => {
    const current = stride;
    stride *= size;
    return current;
  });
}

/** A valid array this reader does not turn into a tensor; an npz skips it, a lone .npy fails. */
class UnsupportedArrayError extends CheckpointError {}

/**
 * Deflated members inflated for reading. Only the most recently read member is kept, so
 * memory is bounded by the largest member, not by the archive; reading members one after
 * another (as every consumer of `chunks()` does) inflates each once.
 */
class InflatedMembers {
  private current: { readonly name: string; readonly source: Promise<ByteSource> } | undefined;

  constructor(private readonly archive: ZipArchive) {}

  get(name: string): Promise<ByteSource> {
    if (this.current?.name !== name) this.current = { name, source: this.archive.member(name) };
    return this.current.source;
  }
}

/** A deflated member that is inflated on its first read, not when the archive is listed. */
class InflatedMemberSource extends RangeCheckedSource {
  constructor(
    private readonly members: InflatedMembers,
    private readonly memberName: string,
    readonly name: string,
    readonly size: number,
  ) {
    super();
  }

  protected async readRaw(offset: number, length: number): Promise<Buffer> {
    const inflated = await this.members.get(this.memberName);
    return inflated.read(offset, length);
  }
}

// ---------------------------------------------------------------------------------------
// The .npy header

interface NpyHeader {
  readonly dtype: DType;
  readonly littleEndian: boolean;
  readonly fortranOrder: boolean;
  readonly shape: readonly number[];
  /** Where the array's bytes begin, and how many there are. */
  readonly dataOffset: number;
  readonly byteSize: number;
}

/** Reads and validates a header through `readPrefix(length)`, which returns the first `length` bytes. */
async function readNpyHeader(readPrefix: (length: number) => Promise<Buffer>, size: number, name: string): Promise<NpyHeader> {
  const fail = (problem: string): never => {
    throw new CheckpointError(name, problem);
  };
  if (size === 0) fail('the file is empty');
  const start = await readPrefix(Math.min(size, VERSION_END + 4));
  if (!start.subarray(0, NPY_MAGIC.length).equals(NPY_MAGIC.subarray(0, Math.min(start.length, NPY_MAGIC.length)))) {
    fail('not a .npy array: it does not start with the magic bytes "\\x93NUMPY"');
  }
  if (start.length < VERSION_END) fail(`truncated: ${size} bytes cannot hold a .npy header`);
  const major = start[NPY_MAGIC.length]!;
  const minor = start[NPY_MAGIC.length + 1]!;
  if (![1, 2, 3].includes(major) || minor !== 0) fail(`unsupported .npy format version ${major}.${minor}`);
  // Version 1 has a 2-byte header length; versions 2 and 3 have 4 bytes.
  const lengthBytes = major === 1 ? 2 : 4;
  const headerStart = VERSION_END + lengthBytes;
  if (start.length < headerStart) fail(`truncated: ${size} bytes cannot hold a .npy header`);
  const headerLength = lengthBytes === 2 ? start.readUInt16LE(VERSION_END) : start.readUInt32LE(VERSION_END);
  const dataOffset = headerStart + headerLength;
  if (dataOffset > size) fail(`header length ${headerLength} runs past the end of the file (${size} bytes): truncated`);
  if (headerLength > MAX_HEADER_BYTES) fail(`header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);

  const headerBytes = (await readPrefix(dataOffset)).subarray(headerStart);
  const text = decodeHeaderText(headerBytes, major, fail);
  const { descr, fortranOrder, shape } = interpretHeader(text, fail);
  const { dtype, littleEndian } = parseDescr(descr, name);
  const elements = elementCountOf(shape, 'array', name);
  const byteSize = elements * DTYPE_BYTES[dtype];
  const available = size - dataOffset;
  if (!Number.isSafeInteger(byteSize) || byteSize > available) {
    fail(`shape (${shape.join(', ')}) of ${descr} needs ${byteSize} bytes of data, but only ${available} follow the header: truncated, or the shape is wrong`);
  }
  return { dtype, littleEndian, fortranOrder, shape, dataOffset, byteSize };
}

/** Versions 1 and 2 store the header as latin-1, version 3 as UTF-8. */
function decodeHeaderText(bytes: Buffer, major: number, fail: (problem: string) => never): string {
  if (major < 3) return bytes.toString('latin1');
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return fail('header is not valid UTF-8');
  }
}

/** The header must be a dict with exactly the keys numpy writes. */
function interpretHeader(
  text: string,
  fail: (problem: string) => never,
): { descr: PythonLiteral; fortranOrder: boolean; shape: number[] } {
  let literal: PythonLiteral;
  try {
    literal = parsePythonLiteral(text);
  } catch (error) {
    return fail(`malformed header ${JSON.stringify(text.trim().slice(0, 200))}: ${(error as Error).message}`);
  }
  if (!(literal instanceof Map)) return fail('malformed header: it is not a dict');
  const keys = [...literal.keys()].sort();
  if (keys.join() !== 'descr,fortran_order,shape') {
    fail(`malformed header: expected the keys descr, fortran_order and shape, found ${keys.join(', ') || 'none'}`);
  }
  const fortranOrder = literal.get('fortran_order');
  if (typeof fortranOrder !== 'boolean') fail('malformed header: fortran_order is not True or False');
  const shape = literal.get('shape');
  if (!Array.isArray(shape) || !shape.every((size): size is number => typeof size === 'number')) {
    return fail('malformed header: shape is not a tuple of integers');
  }
  return { descr: literal.get('descr')!, fortranOrder, shape };
}

const NUMERIC_DTYPES: Readonly<Record<string, DType>> = {
  f2: 'F16', f4: 'F32', f8: 'F64',
  i1: 'I8', i2: 'I16', i4: 'I32', i8: 'I64',
  u1: 'U8', u2: 'U16', u4: 'U32', u8: 'U64',
  b1: 'BOOL', c8: 'C64', c16: 'C128',
};

/** Why each non-numeric array kind is not a tensor, by numpy's kind character. */
const REFUSED_KINDS: Readonly<Record<string, string>> = {
  O: 'object arrays need pickle, which is not executed',
  S: 'byte string arrays are not tensors',
  a: 'byte string arrays are not tensors',
  U: 'unicode string arrays are not tensors',
  V: 'void (raw record) arrays are not tensors',
  M: 'datetime arrays are not tensors',
  m: 'timedelta arrays are not tensors',
};

/** Turns a descr such as '<f8', '>i4' or '|b1' into a dtype and byte order. */
function parseDescr(descr: PythonLiteral, name: string): { dtype: DType; littleEndian: boolean } {
  const refuse = (problem: string): never => {
    throw new UnsupportedArrayError(name, problem);
  };
  if (Array.isArray(descr)) return refuse('structured dtypes (record arrays) are not tensors');
  if (typeof descr !== 'string') throw new CheckpointError(name, 'malformed header: descr is not a string');
  const byteOrder = descr[0] ?? '';
  const code = descr.slice(1);
  const kindReason = REFUSED_KINDS[code[0] ?? ''];
  if (kindReason) refuse(`${kindReason} (dtype '${descr}')`);
  const dtype = Object.hasOwn(NUMERIC_DTYPES, code) ? NUMERIC_DTYPES[code] : undefined;
  if (!dtype) return refuse(`unsupported dtype '${descr}'`);
  const singleByte = DTYPE_BYTES[dtype] === 1;
  if (byteOrder === '<' || (byteOrder === '|' && singleByte)) return { dtype, littleEndian: true };
  if (byteOrder === '>') return { dtype, littleEndian: false };
  return refuse(`dtype '${descr}' has no usable byte order (expected '<', '>' or, for one-byte types, '|')`);
}

// ---------------------------------------------------------------------------------------
// A strict parser for the Python literals numpy writes into headers

/** tuples and lists are arrays; dicts (string keys only) are Maps. */
type PythonLiteral = string | number | boolean | null | readonly PythonLiteral[] | ReadonlyMap<string, PythonLiteral>;

const STRING_ESCAPES: Readonly<Record<string, string>> = { '\\': '\\', "'": "'", '"': '"', n: '\n', r: '\r', t: '\t' };

/**
 * Parses a dict, tuple, list, string, integer, True, False or None, with trailing whitespace
 * allowed; anything else (names, calls, operators, floats) is an error.
 */
function parsePythonLiteral(text: string): PythonLiteral {
  let at = 0;
  // Typed on the declaration so that TypeScript narrows after a call.
  const fail: (problem: string) => never = (problem) => {
    throw new Error(`${problem} at character ${at}`);
  };
  const skipSpace = (): void => {
    while (at < text.length && ' \t\r\n'.includes(text[at]!)) at++;
  };
  const expect = (char: string): void => {
    skipSpace();
    if (text[at] !== char) fail(`expected '${char}'`);
    at++;
  };
  /** Reads comma-separated items up to `close`, allowing a trailing comma; reports whether a comma was seen. */
  const sequence = (close: string, item: () => void): boolean => {
    let sawComma = false;
    for (;;) {
      skipSpace();
      if (text[at] === close) break;
      item();
      skipSpace();
      if (text[at] !== ',') break;
      sawComma = true;
      at++;
    }
    expect(close);
    return sawComma;
  };

  const value = (depth: number): PythonLiteral => {
    if (depth > MAX_LITERAL_DEPTH) fail('nested too deeply');
    skipSpace();
    const char = text[at];
    if (char === '{') {
      at++;
      const dict = new Map<string, PythonLiteral>();
      sequence('}', () => {
        const key = value(depth + 1);
        if (typeof key !== 'string') fail('dict keys must be strings');
        if (dict.has(key)) fail(`duplicate key '${key}'`);
        expect(':');
        dict.set(key, value(depth + 1));
      });
      return dict;
    }
    if (char === '[') {
      at++;
      const list: PythonLiteral[] = [];
      sequence(']', () => list.push(value(depth + 1)));
      return list;
    }
    if (char === '(') {
      at++;
      const items: PythonLiteral[] = [];
      const sawComma = sequence(')', () => items.push(value(depth + 1)));
      // '(x)' is just x; a tuple needs a comma unless it is empty.
      return items.length === 1 && !sawComma ? items[0]! : items;
    }
    if (char === "'" || char === '"') return string();
    if ((char === 'u' || char === 'U') && (text[at + 1] === "'" || text[at + 1] === '"')) {
      at++;
      return string();
    }
    if (char === '-' || (char !== undefined && char >= '0' && char <= '9')) return integer();
    for (const [word, literal] of [['True', true], ['False', false], ['None', null]] as const) {
      if (text.startsWith(word, at) && !/[A-Za-z0-9_]/.test(text[at + word.length] ?? '')) {
        at += word.length;
        return literal;
      }
    }
    return fail(char === undefined ? 'unexpected end' : `unexpected '${char}'`);
  };

  const string = (): string => {
    const quote = text[at++]!;
    let result = '';
    for (;;) {
      const char = text[at++];
      if (char === undefined || char === '\n') return fail('unterminated string');
      if (char === quote) return result;
      if (char !== '\\') {
        result += char;
        continue;
      }
      const escaped = STRING_ESCAPES[text[at] ?? ''];
      if (escaped === undefined) return fail(`unsupported escape '\\${text[at] ?? ''}'`);
      result += escaped;
      at++;
    }
  };

  const integer = (): number => {
    // Python 2 wrote long integers with an L suffix; older files still carry it.
    const pattern = /-?[0-9]+[lL]?/y;
    pattern.lastIndex = at;
    const match = pattern.exec(text);
    if (!match) return fail('expected an integer');
    at = pattern.lastIndex;
    if (/[.eEjJ]/.test(text[at] ?? '')) fail('only integers are allowed');
    return Number(match[0].replace(/[lL]$/, ''));
  };

  const result = value(0);
  skipSpace();
  if (at !== text.length) fail('unexpected text after the literal');
  return result;
}
