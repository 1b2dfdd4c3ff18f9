import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CheckpointError } from '../../server/src/engine/errors';
import type { Checkpoint, FormatReader } from '../../server/src/engine/formats/checkpoint';
import { kerasH5Reader, kerasReader } from '../../server/src/engine/formats/keras';
import { fixturePath, makeTempDir } from '../helpers';
import { tensorNamed, usingCheckpoint } from './checkpointTesting';

/** What make_keras_fixtures.py recorded for each Keras file, from the arrays h5py wrote. */
interface ExpectedKerasFile {
  readonly format: string;
  readonly tensors: Record<string, { readonly dtype: string; readonly shape: number[]; readonly values: number[] }>;
  /** Tensor names in the order Keras saved them. */
  readonly order: string[];
  readonly optimizerTensors?: number;
  readonly metadata: Record<string, unknown>;
}
const expected = JSON.parse(readFileSync(fixturePath('keras', 'expected.json'), 'utf8')) as { files: Record<string, ExpectedKerasFile> };
const KERAS_FILES = Object.keys(expected.files).filter((name) => !name.startsWith('hdf5_'));

let temp: { dir: string; cleanup: () => void };
before(() => {
  temp = makeTempDir('keras-test-');
});
after(() => temp.cleanup());

function readerFor(file: string): FormatReader {
  return file.endsWith('.keras') ? kerasReader : kerasH5Reader;
}

function withCheckpoint<T>(file: string, use: (checkpoint: Checkpoint) => Promise<T>): Promise<T> {
  return usingCheckpoint(readerFor(file).open(file), use);
}

let copies = 0;
/** A copy of a fixture with `damage` applied, under the same extension. */
function damaged(fixture: string, damage: (bytes: Buffer) => Buffer | void): string {
  const bytes = readFileSync(fixturePath('keras', fixture));
  const file = path.join(temp.dir, `damaged${++copies}${fixture.endsWith('.keras') ? '.keras' : '.h5'}`);
  writeFileSync(file, damage(bytes) ?? bytes);
  return file;
}

/** Overwrites the only occurrence of `find` with `replacement` (of the same length). */
function replaceOnce(bytes: Buffer, find: Buffer | string, replacement: Buffer | string): void {
  const needle = Buffer.from(find);
  const at = bytes.indexOf(needle);
  assert.ok(at >= 0 && bytes.indexOf(needle, at + 1) < 0, `exactly one ${JSON.stringify(find.toString())} in the fixture`);
  Buffer.from(replacement).copy(bytes, at);
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

// ---------------------------------------------------------------------------------------

describe('Keras fixtures match what h5py wrote', () => {
  for (const fileName of KERAS_FILES) {
    const file = expected.files[fileName]!;
    test(fileName, async () => {
      await withCheckpoint(fixturePath('keras', fileName), async (checkpoint) => {
        assert.equal(checkpoint.format, file.format);
        assert.deepEqual(checkpoint.tensors.map((tensor) => tensor.name).sort(), Object.keys(file.tensors).sort());
        for (const [name, tensor] of Object.entries(file.tensors)) {
          const found = tensorNamed(checkpoint, name);
          assert.equal(found.dtype, tensor.dtype, `${name} dtype`);
          // Kept as stored: dense kernels in×out, convolution kernels HWIO.
          assert.deepEqual(found.shape, tensor.shape, `${name} shape`);
          assert.deepStrictEqual(Array.from(await found.read()), tensor.values, `${name} values`);
        }
        assert.deepEqual(checkpoint.metadata, file.metadata);
        const optimizerWarning = checkpoint.warnings.filter((warning) => /optimizer tensors .* are not model weights and are not listed/.test(warning));
        if (file.optimizerTensors === undefined) assert.equal(optimizerWarning.length, 0);
        else assert.match(optimizerWarning[0] ?? '', new RegExp(`^${file.optimizerTensors} optimizer tensors \\(under optimizer(_weights)?\\)`));
      });
    });
  }
});

describe('Keras layouts', () => {
  test('Keras 2 tensors come in layer_names and weight_names order, weightless layers contributing none', async () => {
    for (const fileName of ['keras2_weights.h5', 'keras2_model.h5', 'keras2_split_attributes.h5', 'tf_model-00001-of-00002.h5']) {
      await withCheckpoint(fixturePath('keras', fileName), async (checkpoint) => {
        assert.deepEqual(checkpoint.tensors.map((tensor) => tensor.name), expected.files[fileName]!.order, fileName);
      });
    }
  });

  test('a full Keras 2 model lists model weights only and summarises its configuration', async () => {
    await withCheckpoint(fixturePath('keras', 'keras2_model.h5'), async (checkpoint) => {
      assert.ok(checkpoint.tensors.every((tensor) => !tensor.name.startsWith('Adam/')), 'no optimizer slot is listed');
      assert.deepEqual(checkpoint.warnings, ['9 optimizer tensors (under optimizer_weights) are not model weights and are not listed']);
      const config = checkpoint.metadata.model_config as { name: string; layers: string[] };
      assert.equal(config.name, 'sequential');
      assert.deepEqual(config.layers.slice(0, 2), ['conv2d_input (InputLayer)', 'conv2d (Conv2D)']);
    });
  });

  test('Keras 3 variables are named without the layers components, in natural order', async () => {
    await withCheckpoint(fixturePath('keras', 'keras3.weights.h5'), async (checkpoint) => {
      const names = checkpoint.tensors.map((tensor) => tensor.name);
      assert.ok(names.includes('functional/dense/vars/0'), 'a nested model keeps its own name');
      assert.ok(names.indexOf('dense_1/vars/10') === names.indexOf('dense_1/vars/9') + 1, 'vars/10 follows vars/9');
      assert.ok(names.every((name) => !name.startsWith('optimizer')), 'no optimizer variable is listed');
    });
  });

  test('.keras archives read the same whether model.weights.h5 is stored or deflated', async () => {
    const stored = await withCheckpoint(fixturePath('keras', 'keras3.keras'), async (checkpoint) =>
      Promise.all(checkpoint.tensors.map(async (tensor) => [tensor.name, Array.from(await tensor.read())])),
    );
    const deflated = await withCheckpoint(fixturePath('keras', 'keras3_deflated.keras'), async (checkpoint) =>
      Promise.all(checkpoint.tensors.map(async (tensor) => [tensor.name, Array.from(await tensor.read())])),
    );
    assert.ok(stored.length > 0);
    assert.deepStrictEqual(deflated, stored);
  });

  test('a hard link back to an ancestor ends the walk, and a dataset linked twice is listed once', async () => {
    await withCheckpoint(fixturePath('keras', 'keras3_cycle.weights.h5'), async (checkpoint) => {
      assert.deepEqual(checkpoint.tensors.map((tensor) => tensor.name), ['dense/vars/0']);
      assert.deepEqual(checkpoint.warnings, [
        '"layers/dense/loop" links to an object already read; it is not read again',
        '"layers/tied/vars/0" links to an object already read; it is not read again',
      ]);
    });
  });

  test('sniffing by name and by first bytes', () => {
    const hdf5Head = readFileSync(fixturePath('keras', 'keras2_weights.h5')).subarray(0, 64);
    const kerasHead = readFileSync(fixturePath('keras', 'keras3.keras')).subarray(0, 64);
    for (const name of ['/m/model.h5', '/m/MODEL.HDF5', '/m/model.weights.h5']) assert.ok(kerasH5Reader.sniff(name, Buffer.alloc(0)), name);
    assert.ok(kerasH5Reader.sniff('/m/checkpoint', hdf5Head));
    assert.ok(!kerasH5Reader.sniff('/m/model.safetensors', Buffer.from('{"a":1}')));
    assert.ok(kerasReader.sniff('/m/model.keras', Buffer.alloc(0)));
    assert.ok(kerasReader.sniff('/m/download', kerasHead));
    assert.ok(!kerasReader.sniff('/m/model.pt', Buffer.from('PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00archive/data.pkl', 'latin1')));
  });
});

describe('damaged and unusual Keras files', () => {
  test('a truncated .h5 file', async () => {
    await assertRefused(damaged('keras2_weights.h5', (bytes) => bytes.subarray(0, 5000)), /^truncated/);
  });

  test('an HDF5 file that is not Keras weights', async () => {
    const file = fixturePath('keras', 'hdf5_v0.h5');
    await assertRefused(file, /not Keras weights: it has no layer_names attribute, model_weights group or layers group/);
  });

  // h5py 3 stores Keras's lists of bytes as variable-length strings: each name is a global heap
  // object, after its 8-byte size (the group's own link to it lives in a local heap).
  const heapObject = (name: string): Buffer => {
    const size = Buffer.alloc(8);
    size.writeUInt32LE(name.length);
    return Buffer.concat([size, Buffer.from(name)]);
  };

  test('a layer named in layer_names without its group', async () => {
    const file = damaged('keras2_weights.h5', (bytes) => replaceOnce(bytes, heapObject('flatten'), heapObject('flattex')));
    await assertRefused(file, /layer "flattex" is named in layer_names but has no group/);
  });

  test('a weight named in weight_names but not stored', async () => {
    const file = damaged('keras2_weights.h5', (bytes) => replaceOnce(bytes, heapObject('dense/bias:0'), heapObject('dense/bias:9')));
    await assertRefused(file, /weight "dense\/bias:9" of layer "dense" is named in weight_names but not stored/);
  });

  test('a .keras archive without model.weights.h5', async () => {
    const file = damaged('keras3.keras', (bytes) => {
      // The name appears in the local header and in the central directory.
      for (let at = bytes.indexOf('model.weights.h5'); at >= 0; at = bytes.indexOf('model.weights.h5', at + 1)) bytes.write('model.weights.hX', at);
    });
    await assertRefused(file, /no model\.weights\.h5 in the archive/);
  });

  test('a .keras archive whose weights are damaged names the member', async () => {
    const file = damaged('keras3.keras', (bytes) => replaceOnce(bytes, Buffer.from('\x89HDF\r\n\x1a\n', 'latin1'), 'NOT HDF5'));
    await assertRefused(file, /no HDF5 signature/, `${file}[model.weights.h5]`);
  });

  test('an invalid config.json is a warning; the weights are still read', async () => {
    const file = damaged('keras3.keras', (bytes) => replaceOnce(bytes, '{"module": "keras", "class_name": "Sequential"', '["module": "keras", "class_name": "Sequential"'));
    await withCheckpoint(file, async (checkpoint) => {
      assert.ok(checkpoint.warnings.some((warning) => warning.startsWith('config.json is not valid JSON')), checkpoint.warnings.join('; '));
      assert.equal(checkpoint.metadata.model_config, undefined);
      assert.equal(checkpoint.metadata.keras_version, '3.3.3');
      assert.deepStrictEqual(Array.from(await tensorNamed(checkpoint, 'dense/vars/1').read()), expected.files['keras3.keras']!.tensors['dense/vars/1']!.values);
    });
  });
});
