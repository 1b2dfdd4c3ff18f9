import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { CheckpointError } from '../../server/src/engine/errors';
import type { Checkpoint, FormatReader } from '../../server/src/engine/formats/checkpoint';
import type { DType } from '../../server/src/engine/formats/dtype';
import { npyReader, npzReader } from '../../server/src/engine/formats/numpy';
import type { Tensor } from '../../server/src/engine/formats/tensor';
import { fixturePath, makeTempDir } from '../helpers';
import { tensorNamed, usingCheckpoint } from './checkpointTesting';

/** What make_numpy_fixtures.py recorded from numpy itself. */
interface ExpectedArray {
  readonly dtype: string;
  readonly shape: number[];
  readonly fortranOrder: boolean;
  readonly readRefused?: boolean;
  readonly first?: number[];
  readonly sum?: number;
}
interface ExpectedFile {
  readonly arrays?: Record<string, ExpectedArray>;
  readonly skipped?: string[];
  readonly error?: string;
}
const expected = JSON.parse(readFileSync(fixturePath('numpy', 'expected.json'), 'utf8')) as { files: Record<string, ExpectedFile> };

const DTYPE_OF_DESCR_CODE: Readonly<Record<string, DType>> = {
  f2: 'F16', f4: 'F32', f8: 'F64', i1: 'I8', i2: 'I16', i4: 'I32', i8: 'I64',
  u1: 'U8', u2: 'U16', u4: 'U32', u8: 'U64', b1: 'BOOL', c8: 'C64',
};

let temp: { dir: string; cleanup: () => void };
before(() => {
  temp = makeTempDir('numpy-test-');
});
after(() => temp.cleanup());

let fileCounter = 0;
function writeTemp(contents: Buffer, extension = '.npy'): string {
  const file = path.join(temp.dir, `file${++fileCounter}${extension}`);
  writeFileSync(file, contents);
  return file;
}

function readerFor(file: string): FormatReader {
  return file.endsWith('.npz') ? npzReader : npyReader;
}

function withCheckpoint<T>(file: string, use: (checkpoint: Checkpoint) => Promise<T>): Promise<T> {
  return usingCheckpoint(readerFor(file).open(file), use);
}

async function assertRefused(file: string, problem: RegExp, named = file): Promise<void> {
  await assert.rejects(readerFor(file).open(file), (error: unknown) => {
    assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${String(error)}`);
    assert.equal(error.file, named);
    assert.ok(error.message.startsWith(`${named}: `), `message names the file: ${error.message}`);
    assert.match(error.problem, problem);
    return true;
  });
}

async function readAll(file: string, name: string): Promise<number[]> {
  return withCheckpoint(file, async (checkpoint) => Array.from(await tensorNamed(checkpoint, name).read()));
}

/** Sums through chunks() with a small chunk size, so strided reads cross chunk boundaries. */
async function chunkedSum(tensor: Tensor): Promise<{ sum: number; count: number }> {
  let sum = 0;
  let count = 0;
  for await (const chunk of tensor.chunks({ chunkElements: 5 })) {
    for (const value of chunk) sum += value;
    count += chunk.length;
  }
  return { sum, count };
}

function assertClose(actual: number, wanted: number, what: string): void {
  const tolerance = 1e-12 * Math.max(1, Math.abs(wanted));
  assert.ok(Math.abs(actual - wanted) <= tolerance, `${what}: ${actual} is not ${wanted}`);
}

// ---------------------------------------------------------------------------------------

describe('numpy fixtures match what numpy recorded', () => {
  for (const [fileName, file] of Object.entries(expected.files)) {
    const fixture = fixturePath('numpy', fileName);
    if (file.error !== undefined) {
      const fragment = file.error;
      test(`${fileName} is refused (${fragment})`, () => assertRefused(fixture, new RegExp(fragment)));
      continue;
    }
    test(fileName, async () => {
      await withCheckpoint(fixture, async (checkpoint) => {
        assert.equal(checkpoint.format, fileName.endsWith('.npz') ? 'npz' : 'npy');
        const arrays = file.arrays ?? {};
        assert.deepEqual(checkpoint.tensors.map((tensor) => tensor.name).sort(), Object.keys(arrays).sort());
        assert.equal(checkpoint.warnings.length, file.skipped?.length ?? 0);
        for (const skipped of file.skipped ?? []) {
          assert.ok(checkpoint.warnings.some((warning) => warning.includes(`"${skipped}.npy"`)), `${skipped} is reported skipped`);
        }
        for (const [name, array] of Object.entries(arrays)) {
          const tensor = tensorNamed(checkpoint, name);
          assert.equal(tensor.dtype, DTYPE_OF_DESCR_CODE[array.dtype.slice(1)], `${name} dtype ${array.dtype}`);
          assert.deepEqual(tensor.shape, array.shape);
          if (array.readRefused) {
            await assert.rejects(tensor.read(), /complex/);
            continue;
          }
          const first = await tensor.read(0, Math.min(tensor.elementCount, array.first!.length));
          // Exact: numpy's float64 conversion and ours must agree bit for bit (-0 included).
          assert.deepStrictEqual(Array.from(first), array.first, `${name} first values`);
          const { sum, count } = await chunkedSum(tensor);
          assert.equal(count, tensor.elementCount);
          assertClose(sum, array.sum!, `${name} sum`);
        }
      });
    });
  }
});

describe('numpy layouts', () => {
  test('big-endian arrays are byte-swapped', async () => {
    assert.deepEqual(await readAll(fixturePath('numpy', 'big_endian_f8.npy'), 'big_endian_f8'), [1.5, -2.25, 1e10]);
    assert.deepEqual(await readAll(fixturePath('numpy', 'big_endian_i2.npy'), 'big_endian_i2'), [-300, 300, 1]);
    assert.deepEqual(await readAll(fixturePath('numpy', 'big_endian_f2.npy'), 'big_endian_f2'), [1, -0.5, 2 ** -24, 100]);
  });

  test('fortran-order arrays are read in row-major order', async () => {
    const rowMajor = Array.from({ length: 24 }, (_, i) => i * 0.5);
    assert.deepEqual(await readAll(fixturePath('numpy', 'fortran_f4.npy'), 'fortran_f4'), rowMajor);
    await withCheckpoint(fixturePath('numpy', 'fortran_f4.npy'), async (checkpoint) => {
      const tensor = tensorNamed(checkpoint, 'fortran_f4');
      assert.deepEqual(Array.from(await tensor.read(5, 9)), rowMajor.slice(5, 14));
    });
    const bigEndianFortran = Array.from({ length: 12 }, (_, i) => i - 5);
    assert.deepEqual(await readAll(fixturePath('numpy', 'fortran_big_endian_i8.npy'), 'fortran_big_endian_i8'), bigEndianFortran);
  });

  // Over 16 MB of float32, so a chunk of rows (which touches every column) spans more storage
  // than one strided read fetches. With 3000 rows the columns are 12 KB apart and are read
  // many at a time; with 300 000 rows they are 1.2 MB apart and each is read on its own.
  for (const { rows, columns, chunkElements } of [
    { rows: 3000, columns: 1500, chunkElements: 100_000 },
    { rows: 300_000, columns: 15, chunkElements: 1 << 20 },
  ]) {
    test(`a large fortran-order array (${rows}×${columns}) streams in pieces, value for value`, async () => {
      const storage = new Float32Array(rows * columns);
      for (let row = 0; row < rows; row++) {
        for (let column = 0; column < columns; column++) storage[column * rows + row] = row * columns + column;
      }
      const header = `{'descr': '<f4', 'fortran_order': True, 'shape': (${rows}, ${columns}), }`;
      const file = writeTemp(npy(header, Buffer.from(storage.buffer)));
      await withCheckpoint(file, async (checkpoint) => {
        const tensor = tensorNamed(checkpoint, path.parse(file).name);
        let next = 0;
        for await (const chunk of tensor.chunks({ chunkElements })) {
          for (const value of chunk) {
            if (value !== next) assert.fail(`element ${next} reads as ${value}`);
            next++;
          }
        }
        assert.equal(next, rows * columns);
      });
    });
  }

  test('a 0-d array is one element with an empty shape', async () => {
    await withCheckpoint(fixturePath('numpy', 'scalar.npy'), async (checkpoint) => {
      const [tensor] = checkpoint.tensors;
      assert.equal(tensor?.name, 'scalar');
      assert.deepEqual(tensor?.shape, []);
      assert.equal(tensor?.elementCount, 1);
      assert.deepEqual(Array.from(await tensor!.read()), [3.5]);
    });
  });

  test('object arrays are refused without running pickle', async () => {
    await assertRefused(fixturePath('numpy', 'object.npy'), /^object arrays need pickle, which is not executed/);
  });

  test('compressed and stored npz members read the same', async () => {
    for (const name of ['weight', 'bias', 'block/scale', 'mask', 'repeated']) {
      assert.deepEqual(
        await readAll(fixturePath('numpy', 'arrays_compressed.npz'), name),
        await readAll(fixturePath('numpy', 'arrays.npz'), name),
        name,
      );
    }
  });

  test('reading several compressed members in turn and back again', async () => {
    await withCheckpoint(fixturePath('numpy', 'arrays_compressed.npz'), async (checkpoint) => {
      const weight = tensorNamed(checkpoint, 'weight');
      const bias = tensorNamed(checkpoint, 'bias');
      const [w1, b1, w2] = await Promise.all([weight.read(0, 3), bias.read(), weight.read(57, 3)]);
      assert.deepEqual(Array.from(b1!), [0.25, -0.5, 1]);
      assert.deepEqual(Array.from(w1!), [0, 1 / 7, 2 / 7].map(Math.fround));
      assert.deepEqual(Array.from(w2!), [57 / 7, 58 / 7, 59 / 7].map(Math.fround));
    });
  });

  test('a compressed member is inflated only when read: listing needs just its header', async () => {
    // Random values do not compress, so half the deflate stream holds about half the array.
    const whole = npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4096,), }", randomBytes(4096 * 8));
    const compressed = deflateRawSync(whole);
    // Cut the deflate stream after the header: listing still works, reading the values cannot.
    const cut = compressed.subarray(0, Math.floor(compressed.length / 2));
    const file = writeTemp(zip([{ name: 'lazy.npy', data: cut, method: 8, size: whole.length }]), '.npz');
    await withCheckpoint(file, async (checkpoint) => {
      const tensor = tensorNamed(checkpoint, 'lazy');
      assert.deepEqual(tensor.shape, [4096]);
      await assert.rejects(tensor.read(0, 1), (error: unknown) => error instanceof CheckpointError && /damaged|inflates to/.test(error.problem));
    });
  });

  test('npz members that are not .npy are skipped with a warning', async () => {
    const array = npy("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", Buffer.from(new Int32Array([7, -7]).buffer));
    const file = writeTemp(zip([{ name: 'notes.txt', data: Buffer.from('hello'), method: 0 }, { name: 'x.npy', data: array, method: 0 }]), '.npz');
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(checkpoint.warnings, ['member "notes.txt" is not a .npy array; it is skipped']);
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'x').read()), [7, -7]);
    });
  });

  test('sniff recognises .npy and .npz by name or by their first bytes', () => {
    const npyHead = readFileSync(fixturePath('numpy', 'float64.npy')).subarray(0, 64);
    const npzHead = readFileSync(fixturePath('numpy', 'arrays.npz')).subarray(0, 64);
    assert.ok(npyReader.sniff('/x/a.npy', Buffer.alloc(0)));
    assert.ok(npyReader.sniff('/x/a.data', npyHead));
    assert.ok(!npyReader.sniff('/x/a.data', npzHead));
    assert.ok(npzReader.sniff('/x/a.NPZ', Buffer.alloc(0)));
    assert.ok(npzReader.sniff('/x/a.zip', npzHead));
    // A PyTorch zip starts with a .pkl member, not a .npy one.
    const torchHead = zip([{ name: 'archive/data.pkl', data: Buffer.from('x'), method: 0 }]).subarray(0, 64);
    assert.ok(!npzReader.sniff('/x/model.pt', torchHead));
    assert.ok(!npzReader.sniff('/x/a.npy', npyHead));
  });
});

// ---------------------------------------------------------------------------------------

describe('numpy bad input', () => {
  const float64Fixture = (): Buffer => readFileSync(fixturePath('numpy', 'float64.npy'));

  test('empty file', async () => {
    await assertRefused(writeTemp(Buffer.alloc(0)), /the file is empty/);
  });

  test('wrong magic', async () => {
    await assertRefused(writeTemp(Buffer.from('PK\x03\x04 this is no npy file')), /does not start with the magic bytes/);
    await assertRefused(writeTemp(Buffer.from('\x93NUMPZ\x01\x00', 'latin1')), /does not start with the magic bytes/);
  });

  test('truncated inside the preamble or the header', async () => {
    await assertRefused(writeTemp(float64Fixture().subarray(0, 7)), /truncated: 7 bytes cannot hold a .npy header/);
    await assertRefused(writeTemp(float64Fixture().subarray(0, 100)), /header length 118 runs past the end of the file \(100 bytes\): truncated/);
  });

  test('truncated inside the data', async () => {
    const whole = float64Fixture();
    await assertRefused(
      writeTemp(whole.subarray(0, whole.length - 4)),
      /shape \(2, 3\) of <f8 needs 48 bytes of data, but only 44 follow the header: truncated/,
    );
  });

  test('header length beyond the file', async () => {
    const damaged = Buffer.from(float64Fixture());
    damaged.writeUInt16LE(0xffff, 8);
    await assertRefused(writeTemp(damaged), /header length 65535 runs past the end of the file/);
    const version2 = npy("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", Buffer.alloc(8), 2);
    version2.writeUInt32LE(0xffffffff, 8);
    await assertRefused(writeTemp(version2), /header length 4294967295 runs past the end/);
  });

  test('unsupported format version', async () => {
    await assertRefused(writeTemp(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (), }", Buffer.alloc(8), 4)), /unsupported .npy format version 4.0/);
  });

  const malformedHeaders: [string, RegExp][] = [
    ["{'descr': '<f8', 'fortran_order': False}", /expected the keys descr, fortran_order and shape, found descr, fortran_order/],
    ["{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'extra': 1}", /found descr, extra, fortran_order, shape/],
    ["{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'shape': (1,)}", /duplicate key 'shape'/],
    ["{'descr': '<f8', 'fortran_order': 0, 'shape': (1,)}", /fortran_order is not True or False/],
    ["{'descr': '<f8', 'fortran_order': False, 'shape': (1)}", /shape is not a tuple of integers/],
    ["{'descr': '<f8', 'fortran_order': False, 'shape': (1.5,)}", /only integers are allowed/],
    ["{'descr': '<f8', 'fortran_order': False, 'shape': ('1',)}", /shape is not a tuple of integers/],
    ["{'descr': 8, 'fortran_order': False, 'shape': (1,)}", /descr is not a string/],
    ["{'descr': '<f8', 'fortran_order': False, 'shape': (1,)", /expected '}'/],
    ["{'descr': '<f8, 'fortran_order': False, 'shape': (1,)}", /expected '}' at character 17/],
    ["{'descr': '<f8', 'fortran_order': False, 'shape': (1,)} trailing", /unexpected text after the literal/],
    ["__import__('os').system('echo pwned')", /unexpected '_'/],
    ["{'descr': '\\q', 'fortran_order': False, 'shape': (1,)}", /unsupported escape/],
    ['['.repeat(1000), /nested too deeply/],
    ['[1, 2]', /it is not a dict/],
    ['', /unexpected end/],
  ];
  for (const [header, problem] of malformedHeaders) {
    test(`malformed header dict: ${header.slice(0, 60)}`, async () => {
      await assertRefused(writeTemp(npy(header, Buffer.alloc(8))), problem);
    });
  }

  test('the header parser accepts what numpy writes, old Python 2 spellings included', async () => {
    const header = "{u'descr': '<i2', \"fortran_order\": False, 'shape': (2L, 1L,) ,}";
    const file = writeTemp(npy(header, Buffer.from(new Int16Array([3, -3]).buffer)));
    assert.deepEqual(await readAll(file, path.parse(file).name), [3, -3]);
  });

  test('negative and overflowing shapes', async () => {
    await assertRefused(writeTemp(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", Buffer.alloc(8))), /array: invalid dimension -1/);
    await assertRefused(
      writeTemp(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", Buffer.alloc(8))),
      /shape \[4294967296, 4294967296\] is too large/,
    );
  });

  test('shape too large for the file', async () => {
    await assertRefused(
      writeTemp(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000,), }", Buffer.alloc(80))),
      /shape \(1000000\) of <f8 needs 8000000 bytes of data, but only 80 follow the header/,
    );
  });

  test('unsupported dtypes are named', async () => {
    const cases: [string, RegExp][] = [
      ['<f16', /unsupported dtype '<f16'/],
      ['=f8', /dtype '=f8' has no usable byte order/],
      ['|f8', /dtype '|f8' has no usable byte order/],
      ['<S5', /byte string arrays are not tensors/],
      ['|V8', /void \(raw record\) arrays are not tensors/],
      ['<m8[s]', /timedelta arrays are not tensors/],
      ['|O', /object arrays need pickle/],
    ];
    for (const [descr, problem] of cases) {
      await assertRefused(writeTemp(npy(`{'descr': '${descr}', 'fortran_order': False, 'shape': (1,), }`, Buffer.alloc(16))), problem);
    }
  });

  test('a damaged npz names the archive', async () => {
    const whole = readFileSync(fixturePath('numpy', 'arrays.npz'));
    await assertRefused(writeTemp(whole.subarray(0, whole.length - 30), '.npz'), /invalid zip archive/);
    await assertRefused(writeTemp(Buffer.alloc(0), '.npz'), /invalid zip archive/);
  });

  test('a damaged npz member names the archive and the member', async () => {
    const file = writeTemp(zip([{ name: 'bad.npy', data: Buffer.from('not an array at all'), method: 0 }]), '.npz');
    await assertRefused(file, /does not start with the magic bytes/, `${file}[bad.npy]`);
  });
});

// ---------------------------------------------------------------------------------------
// Writers for hand-made inputs

/** A .npy file with `header` padded as numpy pads it (to 64 bytes, ending in a newline). */
function npy(header: string, data: Buffer, major = 1): Buffer {
  const lengthBytes = major === 1 ? 2 : 4;
  const preamble = 8 + lengthBytes;
  const padding = (64 - ((preamble + Buffer.byteLength(header, 'utf8') + 1) % 64)) % 64;
  const headerBytes = Buffer.from(header + ' '.repeat(padding) + '\n', major === 3 ? 'utf8' : 'latin1');
  const prefix = Buffer.alloc(preamble);
  Buffer.from('\x93NUMPY', 'latin1').copy(prefix);
  prefix[6] = major;
  prefix[7] = 0;
  if (lengthBytes === 2) prefix.writeUInt16LE(headerBytes.length, 8);
  else prefix.writeUInt32LE(headerBytes.length, 8);
  return Buffer.concat([prefix, headerBytes, data]);
}

interface ZipEntry {
  readonly name: string;
  /** The member's bytes as stored: already deflated when method is 8. */
  readonly data: Buffer;
  readonly method: 0 | 8;
  /** Uncompressed size; defaults to the data's length. */
  readonly size?: number;
}

/** A plain zip (no zip64, no CRCs, which the reader does not check) around `entries`. */
function zip(entries: readonly ZipEntry[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = Buffer.from(entry.name, 'utf8');
    const size = entry.size ?? entry.data.length;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(entry.method, 8);
    local.writeUInt32LE(entry.data.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(entry.method, 10);
    central.writeUInt32LE(entry.data.length, 20);
    central.writeUInt32LE(size, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, entry.data);
    centrals.push(central, name);
    offset += local.length + name.length + entry.data.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}
