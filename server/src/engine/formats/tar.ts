import type { ByteSource } from '../io/byteSource';
import { CheckpointError } from '../errors';

/**
 * The members of a tar archive (ustar, with pax and GNU long names), as slices of the source:
 * only the 512-byte headers are read. Enough for the tar checkpoints torch.save wrote before
 * version 0.4, which hold four small members.
 */

const BLOCK = 512;
/** Far more than any checkpoint holds; stops a hostile archive of empty members early. */
const MAX_MEMBERS = 10_000;
/** pax headers and GNU long names are a few hundred bytes. */
const MAX_EXTENDED_HEADER = 1024 * 1024;

export const TAR_MAGIC_OFFSET = 257;

/** True when the head of a file carries the ustar magic (old GNU "ustar  " included). */
export function looksLikeTar(head: Buffer): boolean {
  return head.length >= TAR_MAGIC_OFFSET + 5 && head.toString('latin1', TAR_MAGIC_OFFSET, TAR_MAGIC_OFFSET + 5) === 'ustar';
}

export async function readTarMembers(source: ByteSource): Promise<Map<string, ByteSource>> {
  const fail: (problem: string) => never = (problem) => {
    throw new CheckpointError(source.name, `invalid tar archive: ${problem}`);
  };
  const members = new Map<string, ByteSource>();
  let extended: { path?: string; size?: number } = {};
  let offset = 0;
  for (let count = 0; offset + BLOCK <= source.size; count++) {
    if (count > MAX_MEMBERS) fail(`more than ${MAX_MEMBERS} entries`);
    const header = await source.read(offset, BLOCK);
    if (header.every((byte) => byte === 0)) return members;
    if (checksumOf(header) !== parseNumber(header, 148, 8, fail)) fail(`header at byte ${offset} is damaged (checksum mismatch)`);
    const name = extended.path ?? headerName(header);
    const size = extended.size ?? parseNumber(header, 124, 12, fail);
    const dataOffset = offset + BLOCK;
    if (dataOffset + size > source.size) {
      throw new CheckpointError(source.name, `truncated: tar member "${name}" needs bytes ${dataOffset}..${dataOffset + size} but the file has only ${source.size}`);
    }
    const type = String.fromCharCode(header[156]!);
    if (type === 'x' || type === 'L') {
      if (size > MAX_EXTENDED_HEADER) fail(`extended header of ${size} bytes at byte ${offset}`);
      const body = await source.read(dataOffset, size);
      extended = type === 'x' ? parsePax(body, fail) : { ...extended, path: cString(body, 0, body.length) };
    } else {
      if (type === '0' || type === '\0' || type === '7') members.set(name, source.slice(dataOffset, size, `${source.name}[${name}]`));
      extended = {};
    }
    offset = dataOffset + Math.ceil(size / BLOCK) * BLOCK;
  }
  // Ending on a block boundary without the closing zero blocks is tolerated, as tarfile does.
  if (offset !== source.size) throw new CheckpointError(source.name, `truncated: the tar archive ends at byte ${source.size}, inside a 512-byte block`);
  return members;
}

function headerName(header: Buffer): string {
  const name = cString(header, 0, 100);
  const isUstar = header.toString('latin1', TAR_MAGIC_OFFSET, TAR_MAGIC_OFFSET + 5) === 'ustar';
  const prefix = isUstar ? cString(header, 345, 155) : '';
  return prefix ? `${prefix}/${name}` : name;
}

function cString(buffer: Buffer, start: number, length: number): string {
  const end = buffer.indexOf(0, start);
  return buffer.toString('utf8', start, end < 0 || end > start + length ? start + length : end);
}

/** Octal text padded with spaces or NULs, or GNU base-256 when the top bit is set. */
function parseNumber(header: Buffer, start: number, length: number, fail: (problem: string) => never): number {
  if (header[start]! & 0x80) {
    let value = BigInt(header[start]! & 0x7f);
    for (let i = 1; i < length; i++) value = (value << 8n) | BigInt(header[start + i]!);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) fail('member size is out of range');
    return Number(value);
  }
  const text = header.toString('latin1', start, start + length).replace(/[\0 ]+$/, '').trim();
  if (!/^[0-7]*$/.test(text)) fail(`invalid number field "${text}"`);
  return text === '' ? 0 : parseInt(text, 8);
}

function checksumOf(header: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
  return sum;
}

/** pax records: "<length> <key>=<value>\n"; only the path and size matter here. */
function parsePax(body: Buffer, fail: (problem: string) => never): { path?: string; size?: number } {
  const result: { path?: string; size?: number } = {};
  let at = 0;
  while (at < body.length) {
    const space = body.indexOf(0x20, at);
    const length = space < 0 ? NaN : Number(body.toString('latin1', at, space));
    if (!Number.isSafeInteger(length) || length <= 0 || at + length > body.length) fail('damaged pax header');
    const record = body.toString('utf8', space + 1, at + length - 1);
    const equals = record.indexOf('=');
    const key = record.slice(0, equals);
    const value = record.slice(equals + 1);
    if (key === 'path') result.path = value;
    if (key === 'size') {
      const size = Number(value);
      if (!Number.isSafeInteger(size) || size < 0) fail(`invalid pax size "${value}"`);
      result.size = size;
    }
    at += length;
  }
  return result;
}
