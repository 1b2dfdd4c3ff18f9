import assert from 'node:assert/strict';
import { closeSync, copyFileSync, existsSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CheckpointError } from '../../server/src/engine/errors';
import { BufferSource } from '../../server/src/engine/io/byteSource';
import type { Checkpoint } from '../../server/src/engine/formats/checkpoint';
import { unpickleSource } from '../../server/src/engine/formats/pickle';
import { pytorchReader } from '../../server/src/engine/formats/pytorch';
import type { Tensor } from '../../server/src/engine/formats/tensor';
import { fixturePath, makeTempDir } from '../helpers';
import { tensorNamed, usingCheckpoint } from './checkpointTesting';

interface ExpectedTensor {
  readonly name: string;
  readonly dtype: string;
  readonly shape: number[];
  /** First five elements in row-major order and the float64 sum, as torch computes them; null for complex. */
  readonly first: number[] | null;
  readonly sum: number | null;
}

interface ExpectedFile {
  readonly format: string;
  readonly tensors: ExpectedTensor[];
  readonly metadata?: Record<string, unknown>;
  readonly warningsMention?: string[];
}

const FIXTURES = fixturePath('torch');
const EXPECTED = (JSON.parse(readFileSync(path.join(FIXTURES, 'expected.json'), 'utf8')) as { files: Record<string, ExpectedFile> }).files;

let temp: { dir: string; cleanup: () => void };
before(() => {
  temp = makeTempDir('pytorch-test-');
});
after(() => temp.cleanup());

let fileCounter = 0;
function writeTemp(contents: Buffer, name = `file${++fileCounter}.pt`): string {
  const file = path.join(temp.dir, name);
  writeFileSync(file, contents);
  return file;
}

function fixture(name: string): Buffer {
  return readFileSync(path.join(FIXTURES, name));
}

function withCheckpoint<T>(file: string, use: (checkpoint: Checkpoint) => Promise<T>): Promise<T> {
  return usingCheckpoint(pytorchReader.open(file), use);
}

async function readAll(tensor: Tensor, chunkElements = 7): Promise<number[]> {
  const values: number[] = [];
  for await (const chunk of tensor.chunks({ chunkElements })) values.push(...chunk);
  return values;
}

function isCheckpointError(problem: RegExp, named: string) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${String(error)}`);
    assert.ok(error.message.includes(named), `"${error.message}" names ${named}`);
    assert.match(error.message, problem);
    return true;
  };
}

/** Opening `file` fails with a CheckpointError that names the file and matches `problem`. */
async function assertRefused(file: string, problem: RegExp): Promise<void> {
  await assert.rejects(pytorchReader.open(file), isCheckpointError(problem, file));
}

function openDescriptors(): number {
  return readdirSync('/proc/self/fd').length;
}

// ---------------------------------------------------------------------------------------------
// Writers for hand-built files

/** Builds protocol-2 pickles opcode by opcode, laying tensors out as torch.save does. */
class PickleWriter {
  private readonly parts: Buffer[] = [Buffer.from([0x80, 0x02])];

  op(text: string): this {
    this.parts.push(Buffer.from(text, 'latin1'));
    return this;
  }

  global(module: string, name: string): this {
    return this.op(`c${module}\n${name}\n`);
  }

  str(text: string): this {
    const length = Buffer.alloc(4);
    length.writeUInt32LE(Buffer.byteLength(text));
    this.parts.push(Buffer.from('X', 'latin1'), length, Buffer.from(text, 'utf8'));
    return this;
  }

  int(value: number): this {
    const bytes = Buffer.alloc(4);
    bytes.writeInt32LE(value);
    this.parts.push(Buffer.from('J', 'latin1'), bytes);
    return this;
  }

  ints(values: readonly number[]): this {
    this.op('(');
    for (const value of values) this.int(value);
    return this.op('t');
  }

  /** _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()), or v3 with a dtype. */
  tensor(spec: { storageType: string; key: string; numel: number; shape: number[]; strides?: number[]; offset?: number; v3dtype?: string }): this {
    const strides = spec.strides ?? spec.shape.map((_, d) => spec.shape.slice(d + 1).reduce((a, b) => a * b, 1));
    this.global('torch._utils', spec.v3dtype ? '_rebuild_tensor_v3' : '_rebuild_tensor_v2').op('(');
    this.op('(').str('storage').global('torch', spec.storageType).str(spec.key).str('cpu').int(spec.numel).op('tQ');
    this.int(spec.offset ?? 0).ints(spec.shape).ints(strides).op('\x89').global('collections', 'OrderedDict').op(')R');
    if (spec.v3dtype) this.global('torch', spec.v3dtype);
    return this.op('tR');
  }

  /** A dict of named entries, each written by its callback. */
  dict(entries: Array<[string, (writer: this) => void]>): this {
    this.op('}(');
    for (const [key, write] of entries) {
      this.str(key);
      write(this);
    }
    return this.op('u');
  }

  bytes(): Buffer {
    return Buffer.concat([...this.parts, Buffer.from('.')]);
  }
}

/** A stored (uncompressed) zip, as torch.save writes; CRCs are left 0, which the reader does not check. */
function zipStored(entries: Array<[string, Buffer]>): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const nameBytes = Buffer.from(name);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(nameBytes.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, nameBytes, data);
    centrals.push(central, nameBytes);
    offset += local.length + nameBytes.length + data.length;
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

/** Writes {'w': a 2-element float32 tensor on storage `key`}. */
function weightDict(key: string): (writer: PickleWriter) => void {
  return (writer) => writer.dict([['w', (w) => w.tensor({ storageType: 'FloatStorage', key, numel: 2, shape: [2] })]]);
}

function float32Bytes(values: number[], littleEndian = true): Buffer {
  const bytes = Buffer.alloc(values.length * 4);
  values.forEach((value, i) => (littleEndian ? bytes.writeFloatLE(value, i * 4) : bytes.writeFloatBE(value, i * 4)));
  return bytes;
}

const LEGACY_HEADER = Buffer.concat([
  Buffer.from('\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.', 'latin1'), // magic number
  Buffer.from('\x80\x02M\xe9\x03.', 'latin1'), // protocol version 1001
  Buffer.from('\x80\x02}.', 'latin1'), // sys_info
]);

/** torch.save's legacy layout: header pickles, the object, the key list, then [int64 numel][elements] per key. */
function legacyFile(main: Buffer, storages: Array<[string, number, Buffer]>): Buffer {
  const keys = new PickleWriter().op('](');
  for (const [key] of storages) keys.str(key);
  const records = storages.map(([, numel, data]) => {
    const count = Buffer.alloc(8);
    count.writeBigInt64LE(BigInt(numel));
    return Buffer.concat([count, data]);
  });
  return Buffer.concat([LEGACY_HEADER, main, keys.op('e').bytes(), ...records]);
}

/** The local header of a member: the first occurrence of its name, 30 bytes in. */
function zipOffsetOf(zip: Buffer, name: string): number {
  const offset = zip.indexOf(Buffer.from(name));
  assert.ok(offset >= 30, `${name} is in the archive`);
  return offset - 30;
}

function writeTarChecksum(tar: Buffer, header: number): void {
  tar.fill(0x20, header + 148, header + 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += tar[header + i]!;
  tar.write(`${sum.toString(8).padStart(6, '0')}\0 `, header + 148, 'latin1');
}

const SHARD_NAMES = ['pytorch_model-00001-of-00002.bin', 'pytorch_model-00002-of-00002.bin'];
const SHARD_INDEX = JSON.parse(readFileSync(path.join(FIXTURES, 'sharded', 'pytorch_model.bin.index.json'), 'utf8')) as {
  weight_map: Record<string, string>;
};

/** A copy of the sharded fixture with the given shards and weight map. */
function shardFolder(name: string, shards: string[], weightMap: Record<string, string>): string {
  const folder = path.join(temp.dir, name);
  mkdirSync(folder, { recursive: true });
  for (const shard of shards) copyFileSync(path.join(FIXTURES, 'sharded', shard), path.join(folder, shard));
  const indexPath = path.join(folder, 'pytorch_model.bin.index.json');
  writeFileSync(indexPath, JSON.stringify({ weight_map: weightMap }));
  return indexPath;
}

// ---------------------------------------------------------------------------------------------

describe('fixtures written by torch 1.13 read as torch reads them', () => {
  for (const [file, expected] of Object.entries(EXPECTED)) {
    test(file, async () => {
      await withCheckpoint(path.join(FIXTURES, file), async (checkpoint) => {
        assert.equal(checkpoint.format, expected.format);
        assert.deepEqual(
          checkpoint.tensors.map((tensor) => tensor.name),
          expected.tensors.map((tensor) => tensor.name),
        );
        for (const want of expected.tensors) {
          const tensor = tensorNamed(checkpoint, want.name);
          assert.equal(tensor.dtype, want.dtype, `${want.name} dtype`);
          assert.deepEqual(tensor.shape, want.shape, `${want.name} shape`);
          if (want.first === null || want.sum === null) {
            await assert.rejects(tensor.read(), isCheckpointError(/complex tensors/, file));
            continue;
          }
          assert.deepEqual([...(await tensor.read(0, Math.min(5, tensor.elementCount)))], want.first, `${want.name} first values`);
          const sum = (await readAll(tensor)).reduce((total, value) => total + value, 0);
          assert.ok(Math.abs(sum - want.sum) <= 1e-9 * Math.max(1, Math.abs(want.sum)), `${want.name} sums to ${sum}, torch says ${want.sum}`);
        }
        for (const [key, value] of Object.entries(expected.metadata ?? {})) assert.deepEqual(checkpoint.metadata[key], value, `metadata ${key}`);
        for (const mention of expected.warningsMention ?? []) {
          assert.ok(checkpoint.warnings.some((warning) => warning.includes(mention)), `a warning mentions ${mention}: ${checkpoint.warnings.join(' | ')}`);
        }
      });
    });
  }
});

describe('views and shared storage', () => {
  test('transposed, sliced and strided views read the right elements of their storage', async () => {
    await withCheckpoint(path.join(FIXTURES, 'views.pt'), async (checkpoint) => {
      const base = await readAll(tensorNamed(checkpoint, 'base'));
      const at = (row: number, column: number): number => base[row * 5 + column]!;
      const transposed = await readAll(tensorNamed(checkpoint, 'transposed'));
      assert.deepEqual(transposed, Array.from({ length: 20 }, (_, i) => at(i % 4, Math.floor(i / 4))));
      const corner = await readAll(tensorNamed(checkpoint, 'corner'), 2);
      assert.deepEqual(corner, [1, 2, 3].flatMap((row) => [2, 3, 4].map((column) => at(row, column))));
      assert.deepEqual(await readAll(tensorNamed(checkpoint, 'column')), [0, 1, 2, 3].map((row) => at(row, 1)));
      assert.deepEqual(await readAll(tensorNamed(checkpoint, 'head')), [0, 1, 2]);
      assert.deepEqual(await readAll(tensorNamed(checkpoint, 'tail')), [3, 4, 5, 6]);
    });
  });
});

describe('finding the state dict', () => {
  test('a Lightning checkpoint lists its state_dict unprefixed and only counts optimizer state', async () => {
    await withCheckpoint(path.join(FIXTURES, 'lightning.ckpt'), async (checkpoint) => {
      assert.ok(checkpoint.tensors.every((tensor) => tensor.name.startsWith('model.')));
      assert.ok(checkpoint.tensors.every((tensor) => !/exp_avg|best_model_score|step/.test(tensor.name)));
      assert.match(checkpoint.warnings.join('\n'), /13 optimizer and training-state tensors \(under callbacks, optimizer_states\)/);
      assert.equal(checkpoint.metadata.epoch, 3);
      assert.deepEqual(checkpoint.metadata.lr_schedulers, []);
      assert.equal('optimizer_states' in checkpoint.metadata, false);
      assert.equal('state_dict' in checkpoint.metadata, false);
    });
  });

  test('a pickled nn.Module lists what its state_dict() holds', async () => {
    await withCheckpoint(path.join(FIXTURES, 'whole_model.pt'), async (checkpoint) => {
      assert.equal(checkpoint.metadata.class, 'torch.nn.modules.container.Sequential');
      assert.ok(checkpoint.tensors.some((tensor) => tensor.name === '1.num_batches_tracked'));
      assert.deepEqual(await tensorNamed(checkpoint, '2.weight').read(), await tensorNamed(checkpoint, '0.weight').read(), 'a shared module is listed under both names');
    });
  });

  test('two containers of tensors with no obvious state dict keep their keys as prefixes', async () => {
    const pickle = new PickleWriter().dict([['encoder', weightDict('0')], ['decoder', weightDict('1')], ['note', (w) => w.str('hi')]]).bytes();
    const file = writeTemp(zipStored([['archive/data.pkl', pickle], ['archive/data/0', float32Bytes([1, 2])], ['archive/data/1', float32Bytes([3, 4])]]));
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(checkpoint.tensors.map((tensor) => tensor.name), ['encoder.w', 'decoder.w']);
      assert.deepEqual([...(await tensorNamed(checkpoint, 'decoder.w').read())], [3, 4]);
      assert.deepEqual(checkpoint.metadata, { note: 'hi' });
    });
  });

  test('the obvious state dict wins over a second container, which keeps its prefix', async () => {
    const pickle = new PickleWriter().dict([['model', weightDict('0')], ['extra', weightDict('1')]]).bytes();
    const file = writeTemp(zipStored([['archive/data.pkl', pickle], ['archive/data/0', float32Bytes([1, 2])], ['archive/data/1', float32Bytes([3, 4])]]));
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(checkpoint.tensors.map((tensor) => tensor.name), ['w', 'extra.w']);
    });
  });

  test('an unknown class becomes a metadata placeholder with a warning, not an error', async () => {
    const pickle = new PickleWriter()
      .dict([
        ['w', (w) => w.tensor({ storageType: 'FloatStorage', key: '0', numel: 1, shape: [] })],
        ['config', (w) => w.global('mymodule', 'Config').op(')\x81}').str('depth').int(12).op('sb')],
      ])
      .bytes();
    const file = writeTemp(zipStored([['archive/data.pkl', pickle], ['archive/data/0', float32Bytes([5])]]));
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(checkpoint.metadata.config, { __class__: 'mymodule.Config', depth: 12 });
      assert.ok(checkpoint.warnings.some((warning) => warning.includes('mymodule.Config')));
      assert.deepEqual([...(await tensorNamed(checkpoint, 'w').read())], [5]);
    });
  });
});

describe('zip format details', () => {
  test('a byteorder record of "big" reads storages big-endian', async () => {
    const pickle = new PickleWriter().dict([['w', (w) => w.tensor({ storageType: 'FloatStorage', key: '0', numel: 3, shape: [3] })]]).bytes();
    const file = writeTemp(zipStored([['m/data.pkl', pickle], ['m/byteorder', Buffer.from('big')], ['m/data/0', float32Bytes([1.5, -2, 3], false)]]));
    await withCheckpoint(file, async (checkpoint) => assert.deepEqual([...(await checkpoint.tensors[0]!.read())], [1.5, -2, 3]));
  });

  test('newer torch: _rebuild_tensor_v3 over an untyped storage, and dtype objects as storage types', async () => {
    const bf16 = Buffer.from([0x80, 0x3f, 0x00, 0xc0]); // 1.0, -2.0
    const pickle = new PickleWriter()
      .dict([
        ['b', (w) => w.tensor({ storageType: 'UntypedStorage', key: '0', numel: 4, shape: [2], v3dtype: 'bfloat16' })],
        ['f', (w) => w.tensor({ storageType: 'float32', key: '1', numel: 2, shape: [2] })],
      ])
      .bytes();
    const file = writeTemp(zipStored([['a/data.pkl', pickle], ['a/data/0', bf16], ['a/data/1', float32Bytes([7, 8])]]));
    await withCheckpoint(file, async (checkpoint) => {
      assert.equal(tensorNamed(checkpoint, 'b').dtype, 'BF16');
      assert.deepEqual([...(await tensorNamed(checkpoint, 'b').read())], [1, -2]);
      assert.deepEqual([...(await tensorNamed(checkpoint, 'f').read())], [7, 8]);
    });
  });

  test('a storage record shorter than numel requires is refused', async () => {
    const pickle = new PickleWriter().dict([['w', (w) => w.tensor({ storageType: 'FloatStorage', key: '0', numel: 10, shape: [10] })]]).bytes();
    const file = writeTemp(zipStored([['archive/data.pkl', pickle], ['archive/data/0', Buffer.alloc(8)]]));
    await assertRefused(file, /record "archive\/data\/0" holds 8 bytes but its storage of 10 F32 elements needs 40/);
  });

  test('a missing storage record is refused', async () => {
    const pickle = new PickleWriter().dict([['w', (w) => w.tensor({ storageType: 'FloatStorage', key: '3', numel: 1, shape: [] })]]).bytes();
    await assertRefused(writeTemp(zipStored([['archive/data.pkl', pickle]])), /storage "3" has no record "archive\/data\/3"/);
  });

  test('a view reaching past its storage is refused', async () => {
    const pickle = new PickleWriter().dict([['w', (w) => w.tensor({ storageType: 'FloatStorage', key: '0', numel: 2, shape: [2], offset: 1 })]]).bytes();
    await assertRefused(writeTemp(zipStored([['archive/data.pkl', pickle], ['archive/data/0', float32Bytes([1, 2])]])), /tensor "w" needs storage elements 1\.\.2 but its storage holds 2/);
  });

  test('a zip without data.pkl is not a PyTorch checkpoint', async () => {
    await assertRefused(writeTemp(zipStored([['weights.npy', Buffer.alloc(4)]])), /no data\.pkl record/);
  });
});

describe('damaged files', () => {
  test('a truncated zip', async () => {
    const zip = fixture('state_dict_f32.pt');
    await assertRefused(writeTemp(zip.subarray(0, zip.length >> 1)), /no end-of-central-directory record/);
  });

  test('a torch.save zip whose directory understates a storage record is refused on opening', async () => {
    // torch.save streams its records: the local headers carry no sizes, the central directory does.
    const zip = Buffer.from(fixture('state_dict_f32.pt'));
    const entry = zip.lastIndexOf(Buffer.from('state_dict_f32/data/0')) - 46;
    assert.equal(zip.readUInt32LE(entry), 0x02014b50);
    zip.writeUInt32LE(44, entry + 20);
    zip.writeUInt32LE(44, entry + 24);
    await assertRefused(writeTemp(zip), /record "state_dict_f32\/data\/0" holds 44 bytes but its storage of 12 F32 elements needs 48/);
  });

  test('a storage member whose local header lies about its size fails when read; listing stays cheap', async () => {
    const pickle = new PickleWriter().dict([['w', (w) => w.tensor({ storageType: 'FloatStorage', key: '0', numel: 2, shape: [2] })]]).bytes();
    const zip = zipStored([['archive/data.pkl', pickle], ['archive/data/0', float32Bytes([1, 2])]]);
    const header = zipOffsetOf(zip, 'archive/data/0');
    zip.writeUInt32LE(4, header + 18);
    zip.writeUInt32LE(4, header + 22);
    const file = writeTemp(zip);
    await withCheckpoint(file, async (checkpoint) => {
      await assert.rejects(checkpoint.tensors[0]!.read(), isCheckpointError(/zip member "archive\/data\/0" lies about its size/, file));
    });
  });

  test('a data.pkl whose local header lies about its size is refused on opening', async () => {
    const zip = zipStored([['archive/data.pkl', new PickleWriter().dict([]).bytes()]]);
    zip.writeUInt32LE(3, 18);
    zip.writeUInt32LE(3, 22);
    await assertRefused(writeTemp(zip), /zip member "archive\/data\.pkl" lies about its size/);
  });

  test('a truncated legacy file: storages cut short, and the pickle cut short', async () => {
    const legacy = fixture('legacy.pt');
    await assertRefused(writeTemp(legacy.subarray(0, legacy.length - 1)), /truncated: storage "\d+" needs bytes \d+\.\.\d+ but the file has only \d+/);
    await assertRefused(writeTemp(legacy.subarray(0, 200)), /truncated pickle/);
  });

  test('a legacy storage record shorter than numel requires', async () => {
    const legacy = Buffer.from(fixture('legacy.pt'));
    // The storage records start after the five pickles: magic, version, sys_info, object, keys.
    const source = new BufferSource(legacy, 'legacy.pt');
    let offset = 0;
    for (let i = 0; i < 5; i++) offset = (await unpickleSource(source, offset, { persistentLoad: () => null })).end;
    const numel = legacy.readBigInt64LE(offset);
    legacy.writeBigInt64LE(numel - 1n, offset);
    await assertRefused(writeTemp(legacy), new RegExp(`holds ${numel - 1n} elements but its tensors need ${numel}`));
  });

  test('a wrong magic number', async () => {
    const legacy = Buffer.from(fixture('legacy.pt'));
    legacy[6] = legacy[6]! ^ 0xff;
    await assertRefused(writeTemp(legacy), /wrong magic number [0-9a-f]+: not a PyTorch checkpoint/);
    await assertRefused(writeTemp(Buffer.from('just some text, not a checkpoint')), /not a PyTorch checkpoint/);
    await assertRefused(writeTemp(Buffer.alloc(0)), /the file is empty/);
  });

  test('an unsupported legacy protocol version', async () => {
    const legacy = Buffer.from(fixture('legacy.pt'));
    legacy.writeUInt16LE(1000, LEGACY_HEADER.indexOf('M') + 1);
    await assertRefused(writeTemp(legacy), /unsupported legacy PyTorch protocol version 1000/);
  });

  test('a truncated tar', async () => {
    const tar = fixture('legacy_tar.pth');
    await assertRefused(writeTemp(tar.subarray(0, 2000), 'cut.pth'), /truncated: the tar archive ends at byte 2000, inside a 512-byte block/);
  });

  test('a tar header with a bad checksum', async () => {
    const damaged = Buffer.from(fixture('legacy_tar.pth'));
    damaged.write('x', 0);
    await assertRefused(writeTemp(damaged), /invalid tar archive: header at byte 0 is damaged \(checksum mismatch\)/);
  });

  test('a tar without the legacy members is not a PyTorch checkpoint', async () => {
    const tar = Buffer.from(fixture('legacy_tar.pth'));
    const header = tar.indexOf(Buffer.from('pickle\0'));
    assert.equal(header % 512, 0);
    tar.write('pickl3', header);
    writeTarChecksum(tar, header);
    await assertRefused(writeTemp(tar), /tar archive has no "pickle" member: not a PyTorch checkpoint/);
  });
});

describe('hostile files', () => {
  const marker = (): string => path.join(temp.dir, 'pwned');

  test('os.system in a raw pickle file is refused and never run', async () => {
    const command = `touch ${marker()}`;
    const file = writeTemp(Buffer.from(`\x80\x02cos\nsystem\nq\x00X${String.fromCharCode(command.length)}\x00\x00\x00${command}\x85R.`, 'latin1'));
    await assertRefused(file, /pickle calls os\.system, which is never executed; refusing this file/);
    assert.equal(existsSync(marker()), false);
  });

  test('os.system in the data.pkl of a zip is refused and never run', async () => {
    const pickle = Buffer.from(`cos\nsystem\n(S'touch ${marker()}'\ntR.`, 'latin1');
    await assertRefused(writeTemp(zipStored([['archive/data.pkl', pickle]])), /pickle calls os\.system/);
    assert.equal(existsSync(marker()), false);
  });

  test('a deeply nested pickle file gives a clear error quickly', async () => {
    const started = Date.now();
    await assertRefused(writeTemp(Buffer.from(`\x80\x02${']'.repeat(100_000)}${'a'.repeat(99_999)}.`, 'latin1')), /nests containers deeper than 1000 levels/);
    assert.ok(Date.now() - started < 2000);
  });

  test('a reference bomb around an array is refused quickly rather than walked', async () => {
    // 60 levels of (x, x) over a numpy array: 2^60 paths to one tensor.
    const array =
      "cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R(K\x01K\x01\x85cnumpy\ndtype\nX\x02\x00\x00\x00f4\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89C\x04\x00\x00\x80?tb";
    const bomb = `\x80\x03${array}q\x000${'h\x00h\x00\x86q\x000'.repeat(60)}}X\x01\x00\x00\x00xh\x00s.`;
    const started = Date.now();
    await assertRefused(writeTemp(Buffer.from(bomb, 'latin1'), 'bomb.pkl'), /reaches the same containers more than 100000 times \(a reference bomb\?\)/);
    assert.ok(Date.now() - started < 3000);
  });

  test('a plain pickle of numpy arrays lists them as tensors', async () => {
    const array =
      "cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R(K\x01K\x02\x85cnumpy\ndtype\nX\x02\x00\x00\x00f4\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89C\x08\x00\x00\x80?\x00\x00\x00@tb";
    const file = writeTemp(Buffer.from(`\x80\x03}(X\x01\x00\x00\x00a${array}X\x04\x00\x00\x00stepK\x05u.`, 'latin1'), 'plain.pkl');
    await withCheckpoint(file, async (checkpoint) => {
      assert.equal(checkpoint.format, 'pytorch-pickle');
      assert.deepEqual([...(await tensorNamed(checkpoint, 'a').read())], [1, 2]);
      assert.deepEqual(checkpoint.metadata, { step: 5 });
    });
  });
});

describe('sharded checkpoints', () => {
  test('a missing shard is a clear error naming the index and the shard', async () => {
    const indexPath = shardFolder('missing-shard', [SHARD_NAMES[0]!], SHARD_INDEX.weight_map);
    await assertRefused(indexPath, /shard "pytorch_model-00002-of-00002\.bin" is missing \(cannot open: ENOENT\)/);
  });

  test('a name mapped to a shard that lacks it is a clear error', async () => {
    const indexPath = shardFolder('wrong-shard', SHARD_NAMES, { ...SHARD_INDEX.weight_map, '0.weight': SHARD_NAMES[1]! });
    await assertRefused(indexPath, /"0\.weight" maps to shard "pytorch_model-00002-of-00002\.bin", which does not hold it/);
  });

  test('a shard outside the index folder is refused', async () => {
    const indexPath = shardFolder('escaping', [], { '0.weight': '../elsewhere.bin' });
    await assertRefused(indexPath, /shard "\.\.\/elsewhere\.bin" lies outside the index's folder/);
  });

  test('an index that is not JSON', async () => {
    const indexPath = path.join(temp.dir, 'broken.bin.index.json');
    writeFileSync(indexPath, '{ not json');
    await assertRefused(indexPath, /the index is not valid JSON/);
  });
});

describe('cost and resources', () => {
  test('opening a file with a 4 GiB storage reads only its pickles', async () => {
    const numel = 2 ** 30;
    const main = new PickleWriter()
      .dict([['huge', (w) => w.tensor({ storageType: 'FloatStorage', key: '0', numel, shape: [2 ** 15, 2 ** 15] })]])
      .bytes();
    const head = legacyFile(main, [['0', numel, Buffer.alloc(0)]]);
    const file = path.join(temp.dir, 'huge.pt');
    const descriptor = openSync(file, 'w');
    writeSync(descriptor, head);
    ftruncateSync(descriptor, head.length + numel * 4); // sparse: nothing is written
    closeSync(descriptor);
    const started = Date.now();
    await withCheckpoint(file, async (checkpoint) => {
      assert.equal(checkpoint.format, 'pytorch-pickle');
      const tensor = tensorNamed(checkpoint, 'huge');
      assert.equal(tensor.byteSize, 4 * numel);
      assert.deepEqual([...(await tensor.read(numel - 2, 2))], [0, 0]);
    });
    assert.ok(Date.now() - started < 1000);
  });

  test('file handles are closed by close() and when opening fails', async () => {
    const before = openDescriptors();
    const checkpoint = await pytorchReader.open(path.join(FIXTURES, 'state_dict_f32.pt'));
    assert.equal(openDescriptors(), before + 1);
    await checkpoint.close();
    assert.equal(openDescriptors(), before);
    const legacy = fixture('legacy.pt');
    await assert.rejects(pytorchReader.open(writeTemp(legacy.subarray(0, legacy.length - 10))));
    await assert.rejects(pytorchReader.open(shardFolder('one-shard', [SHARD_NAMES[0]!], SHARD_INDEX.weight_map)));
    assert.equal(openDescriptors(), before);
  });
});

describe('sniff', () => {
  test('accepts PyTorch names and signatures, and leaves numpy archives alone', () => {
    for (const name of ['a.pt', 'a.PTH', 'a.bin', 'a.ckpt', 'a.pkl', 'a.tar', 'pytorch_model.bin.index.json']) {
      assert.equal(pytorchReader.sniff(name, Buffer.alloc(0)), true, name);
    }
    assert.equal(pytorchReader.sniff('weights', fixture('state_dict_f32.pt').subarray(0, 512)), true);
    assert.equal(pytorchReader.sniff('weights', fixture('legacy.pt').subarray(0, 512)), true);
    assert.equal(pytorchReader.sniff('weights', fixture('legacy_tar.pth').subarray(0, 512)), true);
    assert.equal(pytorchReader.sniff('arrays.npz', fixture('state_dict_f32.pt').subarray(0, 512)), false);
    assert.equal(pytorchReader.sniff('notes.txt', Buffer.from('hello')), false);
  });
});
