import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { deflateSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { CheckpointError } from '../../server/src/engine/errors';
import { Hdf5File, type Hdf5Object, type Hdf5Value } from '../../server/src/engine/formats/hdf5';
import { FileSource } from '../../server/src/engine/io/byteSource';
import { fixturePath, makeTempDir } from '../helpers';

/** What make_keras_fixtures.py recorded from h5py for the HDF5 feature files. */
interface ExpectedDataset {
  readonly dtype: string;
  readonly shape: number[];
  readonly values: number[];
}
interface PatchPoints {
  readonly rootAddressField: number;
  readonly continuationMessage: number;
  readonly firstHeaderBlock: number;
  readonly firstHeaderBlockSize: number;
  readonly dataspaceDims: number;
  readonly chunkDims: number;
  readonly chunk: { readonly address: number; readonly size: number; readonly bytes: number };
  readonly linksBtree: { readonly address: number; readonly level: number; readonly entries: number; readonly children: number[] };
}
interface ExpectedFeatures {
  readonly superblock: number;
  readonly datasets: Record<string, ExpectedDataset>;
  readonly attributes: Record<string, Record<string, Hdf5Value>>;
  readonly rootLinks: string[];
  readonly links?: string[];
  readonly patch?: PatchPoints;
}
const expected = JSON.parse(readFileSync(fixturePath('keras', 'expected.json'), 'utf8')) as { files: Record<string, ExpectedFeatures> };
const FEATURE_FILES = ['hdf5_v0.h5', 'hdf5_v2.h5', 'hdf5_v3.h5', 'hdf5_userblock.h5'];
const patch = expected.files['hdf5_v0.h5']!.patch!;

let temp: { dir: string; cleanup: () => void };
before(() => {
  temp = makeTempDir('hdf5-test-');
});
after(() => temp.cleanup());

async function withFile<T>(file: string, use: (hdf5: Hdf5File) => Promise<T>): Promise<T> {
  const source = await FileSource.open(file);
  try {
    return await use(await Hdf5File.open(source));
  } finally {
    await source.close();
  }
}

async function objectAt(hdf5: Hdf5File, objectPath: string): Promise<Hdf5Object> {
  const object = await hdf5.resolve(objectPath);
  assert.ok(object, `${objectPath} resolves`);
  return object;
}

async function readDataset(hdf5: Hdf5File, objectPath: string): Promise<number[]> {
  return Array.from(await (await objectAt(hdf5, objectPath)).dataset().tensor(objectPath).read());
}

/** A copy of hdf5_v0.h5 with `damage` applied, in the temporary folder. */
let copies = 0;
function damaged(damage: (bytes: Buffer) => Buffer | void, source = 'hdf5_v0.h5'): string {
  const bytes = readFileSync(fixturePath('keras', source));
  const result = damage(bytes) ?? bytes;
  const file = path.join(temp.dir, `damaged${++copies}.h5`);
  writeFileSync(file, result);
  return file;
}

async function assertRefused(file: string, action: (hdf5: Hdf5File) => Promise<unknown>, problem: RegExp): Promise<void> {
  await assert.rejects(
    withFile(file, action),
    (error: unknown) => {
      assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${String(error)}`);
      assert.equal(error.file, file);
      assert.ok(error.message.startsWith(`${file}: `), `message names the file: ${error.message}`);
      assert.match(error.problem, problem);
      return true;
    },
  );
}

function writeUInt64(bytes: Buffer, at: number, value: number): void {
  bytes.writeBigUInt64LE(BigInt(value), at);
}

// ---------------------------------------------------------------------------------------

describe('HDF5 feature files read as h5py reads them', () => {
  for (const fileName of FEATURE_FILES) {
    const file = fixturePath('keras', fileName);
    const features = expected.files[fileName]!;

    test(`${fileName}: superblock ${features.superblock}, links and every dataset value`, async () => {
      await withFile(file, async (hdf5) => {
        assert.equal(hdf5.superblockVersion, features.superblock);
        const root = await hdf5.root();
        assert.deepEqual((await root.links()).map((link) => link.name).sort(), features.rootLinks);
        for (const [datasetPath, dataset] of Object.entries(features.datasets)) {
          const object = await objectAt(hdf5, datasetPath);
          assert.ok(object.isDataset && !object.isGroup, `${datasetPath} is a dataset`);
          const info = object.dataset();
          assert.equal(info.dtype, dataset.dtype, `${datasetPath} dtype`);
          assert.deepEqual(info.shape, dataset.shape, `${datasetPath} shape`);
          // Exact: h5py's float64 conversion and ours agree bit for bit.
          assert.deepStrictEqual(await readDataset(hdf5, datasetPath), dataset.values, `${datasetPath} values`);
        }
      });
    });

    test(`${fileName}: every attribute`, async () => {
      await withFile(file, async (hdf5) => {
        for (const [objectPath, attributes] of Object.entries(features.attributes)) {
          const found = await (await objectAt(hdf5, objectPath)).attributes();
          assert.deepEqual([...found.keys()].sort(), Object.keys(attributes).sort(), `${objectPath} attribute names`);
          for (const [name, value] of Object.entries(attributes)) {
            assert.deepStrictEqual(await found.get(name)!.read(), value, `${objectPath} attribute ${name}`);
          }
        }
      });
    });
  }

  for (const fileName of ['hdf5_v0.h5', 'hdf5_v3.h5']) {
    test(`${fileName}: a group of 150 links (${fileName === 'hdf5_v0.h5' ? 'symbol table B-tree of two levels' : 'dense storage'})`, async () => {
      await withFile(fixturePath('keras', fileName), async (hdf5) => {
        const links = await (await objectAt(hdf5, 'links')).links();
        assert.deepEqual(links.map((link) => link.name).sort(), expected.files[fileName]!.links);
        const target = await objectAt(hdf5, 'links_target');
        assert.ok(links.every((link) => link.address === target.address), 'every link is a hard link to links_target');
      });
    });
  }
});

describe('HDF5 storage layouts', () => {
  const features = expected.files['hdf5_v3.h5']!;

  test('each file uses the storage the test means to cover', async () => {
    // libver='latest' picks the chunk index by how the dataset was made; older files use v1 B-trees.
    const latestIndexes: Record<string, string> = {
      gzip_shuffle: 'fixed-array', shuffle: 'fixed-array', plain: 'fixed-array', partial: 'fixed-array', single: 'single', implicit: 'implicit',
    };
    for (const fileName of ['hdf5_v0.h5', 'hdf5_v3.h5']) {
      await withFile(fixturePath('keras', fileName), async (hdf5) => {
        assert.equal((await objectAt(hdf5, 'data/compact')).dataset().storage, 'compact');
        assert.equal((await objectAt(hdf5, 'data/f4')).dataset().storage, 'contiguous');
        for (const [name, index] of Object.entries(latestIndexes)) {
          const dataset = (await objectAt(hdf5, `chunked/${name}`)).dataset();
          assert.equal(dataset.storage, 'chunked', name);
          assert.equal(dataset.chunkIndex, fileName === 'hdf5_v3.h5' ? index : 'v1-btree', name);
        }
      });
    }
  });

  test('chunked reads of any window match the whole array, across chunk and row boundaries', async () => {
    for (const fileName of ['hdf5_v0.h5', 'hdf5_v3.h5']) {
      await withFile(fixturePath('keras', fileName), async (hdf5) => {
        for (const name of ['chunked/gzip_shuffle', 'chunked/shuffle', 'chunked/partial', 'chunked/implicit']) {
          const tensor = (await objectAt(hdf5, name)).dataset().tensor(name);
          const all = features.datasets[name]!.values;
          for (const [start, count] of [[0, 1], [3, 9], [10, 12], [all.length - 7, 7], [5, 0]] as const) {
            assert.deepStrictEqual(Array.from(await tensor.read(start, count)), all.slice(start, start + count), `${fileName} ${name} [${start}, +${count})`);
          }
          const streamed: number[] = [];
          for await (const chunk of tensor.chunks({ chunkElements: 5 })) streamed.push(...chunk);
          assert.deepStrictEqual(streamed, all, `${fileName} ${name} streamed`);
          await assert.rejects(tensor.read(all.length - 1, 2), CheckpointError);
        }
      });
    }
  });

  test('chunks never written read as zeros', async () => {
    await withFile(fixturePath('keras', 'hdf5_v3.h5'), async (hdf5) => {
      const values = await readDataset(hdf5, 'chunked/partial');
      // Rows 2-3 were never written.
      assert.deepEqual(values.slice(8, 16), new Array(8).fill(0));
      assert.ok(values.slice(0, 2).every((value) => value !== 0));
    });
  });

  test('a filter other than deflate and shuffle is refused by name', async () => {
    for (const fileName of ['hdf5_v0.h5', 'hdf5_v3.h5']) {
      const file = fixturePath('keras', fileName);
      await assertRefused(file, async (hdf5) => (await objectAt(hdf5, 'chunked/lzf')).dataset(), /filter 32000 \(lzf\) is not supported/);
    }
  });

  test('a hard link back to the root resolves and a path through it ends', async () => {
    await withFile(fixturePath('keras', 'hdf5_v0.h5'), async (hdf5) => {
      const root = await hdf5.root();
      assert.equal((await objectAt(hdf5, 'attributes/root')).address, root.address);
      assert.deepStrictEqual(await readDataset(hdf5, 'attributes/root/attributes/root/data/f4'), expected.files['hdf5_v0.h5']!.datasets['data/f4']!.values);
      assert.equal(await hdf5.resolve('attributes/missing'), undefined);
    });
  });
});

describe('damaged and hostile HDF5 files are refused with the file named', () => {
  const readF4 = async (hdf5: Hdf5File): Promise<unknown> => readDataset(hdf5, 'data/f4');

  test('a truncated file', async () => {
    await assertRefused(damaged((bytes) => bytes.subarray(0, bytes.length >> 1)), readF4, /^truncated: the HDF5 superblock says the file ends at byte \d+, but it has only \d+ bytes/);
  });

  test('a bad signature, and an empty file', async () => {
    await assertRefused(damaged((bytes) => void (bytes[1] = 0x58)), readF4, /no HDF5 signature/);
    await assertRefused(damaged(() => Buffer.alloc(0)), readF4, /the file is empty/);
  });

  test('an object header address outside the file', async () => {
    const file = damaged((bytes) => writeUInt64(bytes, patch.rootAddressField, 2 ** 40));
    await assertRefused(file, (hdf5) => hdf5.root(), /object header at 1099511627776 .* lies outside the file/);
  });

  test('continuation blocks that loop back', async () => {
    const file = damaged((bytes) => {
      writeUInt64(bytes, patch.continuationMessage, patch.firstHeaderBlock);
      writeUInt64(bytes, patch.continuationMessage + 8, patch.firstHeaderBlockSize);
    });
    await assertRefused(file, (hdf5) => objectAt(hdf5, 'continued'), /is reached twice: the header's continuation blocks form a loop/);
  });

  test('a group B-tree whose node points to itself or shares a child', async () => {
    const { address, level, children } = patch.linksBtree;
    assert.ok(level >= 1 && children.length >= 2, 'the links group has an internal B-tree node');
    const listLinks = async (hdf5: Hdf5File): Promise<unknown> => (await objectAt(hdf5, 'links')).links();
    // The child pointers follow the 24-byte node header, each after an 8-byte key.
    const childField = (i: number): number => address + 24 + 8 + i * 16;
    await assertRefused(damaged((bytes) => writeUInt64(bytes, childField(0), address)), listLinks, /is reached twice: the B-tree has a cycle/);
    await assertRefused(damaged((bytes) => writeUInt64(bytes, childField(1), children[0]!)), listLinks, /is reached twice/);
    await assertRefused(
      damaged((bytes) => void bytes.writeUInt8(level + 1, address + 5)),
      async (hdf5) => {
        // A node claiming a higher level makes its children one level too high.
        await (await objectAt(hdf5, 'links')).links();
      },
      /has level \d+ but its parent expects level \d+/,
    );
  });

  test('chunks whose declared size is huge', async () => {
    const file = damaged((bytes) => void bytes.writeUInt32LE(0x7fffffff, patch.chunkDims));
    await assertRefused(file, async (hdf5) => (await objectAt(hdf5, 'chunked/gzip_shuffle')).dataset(), /exceed the \d+-byte limit/);
  });

  test('a chunk that inflates past its size (a deflate bomb)', async () => {
    const bomb = deflateSync(Buffer.alloc(patch.chunk.bytes * 100));
    assert.ok(bomb.length <= patch.chunk.size, 'the bomb fits where the chunk was');
    const file = damaged((bytes) => void bomb.copy(bytes, patch.chunk.address));
    await assertRefused(file, (hdf5) => readDataset(hdf5, 'chunked/gzip_shuffle'), /inflates to more than the chunk's 48 bytes/);
  });

  test('a chunk that is not deflate data', async () => {
    const file = damaged((bytes) => void bytes.fill(0x55, patch.chunk.address, patch.chunk.address + patch.chunk.size));
    await assertRefused(file, (hdf5) => readDataset(hdf5, 'chunked/gzip_shuffle'), /is not valid deflate data/);
  });

  test('a dataspace with absurd dimensions', async () => {
    const huge = damaged((bytes) => {
      writeUInt64(bytes, patch.dataspaceDims, 2 ** 40);
      writeUInt64(bytes, patch.dataspaceDims + 8, 2 ** 40);
    });
    await assertRefused(huge, async (hdf5) => (await objectAt(hdf5, 'data/f4')).dataset(), /is too large/);
    const large = damaged((bytes) => writeUInt64(bytes, patch.dataspaceDims, 1_000_000));
    await assertRefused(large, async (hdf5) => (await objectAt(hdf5, 'data/f4')).dataset(), /contiguous data has 60 bytes, but shape \[1000000, 5\] of F32 needs 20000000/);
  });

  test('corrupt version-2 metadata fails its checksum', async () => {
    const superblock = damaged((bytes) => void (bytes[20]! ^= 0x01), 'hdf5_v3.h5');
    await assertRefused(superblock, readF4, /superblock version 3 checksum mismatch/);
    const header = damaged((bytes) => {
      const rootAddress = Number(bytes.readBigUInt64LE(36));
      bytes[rootAddress + 12]! ^= 0x01;
    }, 'hdf5_v3.h5');
    await assertRefused(header, (hdf5) => hdf5.root(), /object header at \d+ checksum mismatch/);
  });
});
