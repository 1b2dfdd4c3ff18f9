import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { CheckpointError } from '../../server/src/engine/errors';
import type { Checkpoint } from '../../server/src/engine/formats/checkpoint';
import { isTfjsModelJson, tfjsReader } from '../../server/src/engine/formats/tfjs';
import { REPO_ROOT, makeTempDir } from '../helpers';
import { tensorNamed, usingCheckpoint } from './checkpointTesting';
import {
  float32,
  int32,
  sequentialTopology,
  strings,
  uint16,
  uint8,
  weightGroup,
  writeTfjsModel,
  type TfjsModelSpec,
  type TfjsWeightSpec,
} from './tfjsWriter';

let temp: { dir: string; cleanup: () => void };
before(async () => {
  temp = makeTempDir('tfjs-test-');
  // Only silences TF.js's advice to install its native backend.
  tf.env().set('IS_TEST', true);
  await tf.setBackend('cpu');
});
after(() => temp.cleanup());

let folderCounter = 0;
/** A fresh folder per model: shard names repeat from model to model. */
function freshFolder(): string {
  const folder = path.join(temp.dir, `model${++folderCounter}`);
  mkdirSync(folder);
  return folder;
}

function withModel<T>(file: string, use: (checkpoint: Checkpoint) => Promise<T>): Promise<T> {
  return usingCheckpoint(tfjsReader.open(file), use);
}

async function assertRefused(file: string, problem: RegExp): Promise<void> {
  await assert.rejects(tfjsReader.open(file), (error: unknown) => {
    assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${String(error)}`);
    assert.equal(error.file, file);
    assert.ok(error.message.startsWith(`${file}: `), `message names the file: ${error.message}`);
    assert.match(error.problem, problem);
    return true;
  });
}

async function values(checkpoint: Checkpoint, name: string): Promise<number[]> {
  return Array.from(await tensorNamed(checkpoint, name).read());
}

/** Rewrites model.json through `edit`, keeping the shards. */
function editModelJson(modelPath: string, edit: (json: { weightsManifest: { paths: string[]; weights: Record<string, unknown>[] }[] }) => void): void {
  const json = JSON.parse(readFileSync(modelPath, 'utf8'));
  edit(json);
  writeFileSync(modelPath, JSON.stringify(json));
}

/** Every value TF.js itself decodes from the model's shards (all groups, in order), by weight name. */
function decodedByTfjs(modelPath: string): Map<string, number[]> {
  const json = JSON.parse(readFileSync(modelPath, 'utf8')) as { weightsManifest: tf.io.WeightsManifestConfig };
  const folder = path.dirname(modelPath);
  const buffers = json.weightsManifest.flatMap((group) =>
    group.paths.map((shard) => {
      const bytes = readFileSync(path.join(folder, shard));
      return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
    }),
  );
  const specs = json.weightsManifest.flatMap((group) => group.weights);
  const decoded = tf.io.decodeWeights(buffers, specs);
  const byName = new Map<string, number[]>();
  for (const [name, tensor] of Object.entries(decoded)) {
    if (tensor.dtype !== 'string') byName.set(name, Array.from(tensor.dataSync() as Float32Array | Int32Array | Uint8Array));
    tensor.dispose();
  }
  return byName;
}

// ---------------------------------------------------------------------------------------

/**
 * A small layers model: group 1 has three 32-byte shards with "dense_Dense1/bias" spanning
 * the first two, uint8- and float16-quantized weights, a string, an int32, a bool and an
 * int32 weight quantized to uint8; group 2 has a uint16-quantized weight.
 */
const GROUP_1: TfjsWeightSpec[] = [
  { name: 'dense_Dense1/kernel', shape: [2, 3], dtype: 'float32', data: float32(0.5, -1, 2, 0.25, 3, -4) },
  { name: 'dense_Dense1/bias', shape: [3], dtype: 'float32', data: float32(0.1, 0.2, -0.3) },
  {
    name: 'dense_Dense2/kernel',
    shape: [3, 2],
    dtype: 'float32',
    quantization: { dtype: 'uint8', scale: 0.5, min: -1, original_dtype: 'float32' },
    data: uint8(0, 1, 2, 128, 254, 255),
  },
  { name: 'dense_Dense2/bias', shape: [2], dtype: 'float32', quantization: { dtype: 'float16', original_dtype: 'float32' }, data: uint16(0x3c00, 0xc000) },
  { name: 'vocabulary', shape: [2], dtype: 'string', data: strings('a', 'bc') },
  { name: 'step', shape: [1], dtype: 'int32', data: int32(7) },
  { name: 'mask', shape: [3], dtype: 'bool', data: uint8(1, 0, 1) },
  { name: 'counts', shape: [2], dtype: 'int32', quantization: { dtype: 'uint8', scale: 0.5, min: 0.25 }, data: uint8(0, 3) },
];
const GROUP_2: TfjsWeightSpec[] = [
  { name: 'dense_Dense3/kernel', shape: [2], dtype: 'float32', quantization: { dtype: 'uint16', scale: 2 ** -16, min: -0.5 }, data: uint16(0, 65535) },
  { name: 'dense_Dense3/bias', shape: [2], dtype: 'float32', data: float32(1e-3, 2) },
];
const LAYERS_MODEL: TfjsModelSpec = {
  groups: [weightGroup(GROUP_1, 32), weightGroup(GROUP_2, 1000)],
  fields: {
    format: 'layers-model',
    generatedBy: 'keras v2.13.1',
    convertedBy: 'TensorFlow.js Converter v4.22.0',
    modelTopology: sequentialTopology(['dense_Dense1', 'dense_Dense2', 'dense_Dense3']),
    userDefinedMetadata: { base: 'org/base-model', epochs: 3 },
  },
};

/** The values each listed weight holds, worked out by hand from the codes above. */
const EXPECTED: ReadonlyMap<string, { readonly dtype: string; readonly values: number[] }> = new Map([
  ['dense_Dense1/kernel', { dtype: 'F32', values: [0.5, -1, 2, 0.25, 3, -4] }],
  ['dense_Dense1/bias', { dtype: 'F32', values: [Math.fround(0.1), Math.fround(0.2), Math.fround(-0.3)] }],
  // code * 0.5 - 1
  ['dense_Dense2/kernel', { dtype: 'F32', values: [-1, -0.5, 0, 63, 126, 126.5] }],
  ['dense_Dense2/bias', { dtype: 'F16', values: [1, -2] }],
  ['step', { dtype: 'I32', values: [7] }],
  ['mask', { dtype: 'BOOL', values: [1, 0, 1] }],
  // round(code * 0.5 + 0.25): round(0.25) = 0, round(1.75) = 2
  ['counts', { dtype: 'I32', values: [0, 2] }],
  // code * 2^-16 - 0.5
  ['dense_Dense3/kernel', { dtype: 'F32', values: [-0.5, 32767 / 65536] }],
  ['dense_Dense3/bias', { dtype: 'F32', values: [Math.fround(1e-3), 2] }],
]);

describe('TF.js layers model', () => {
  test('the writer cut group 1 into three shards, one weight across the first boundary', () => {
    const folder = freshFolder();
    const modelPath = writeTfjsModel(folder, LAYERS_MODEL);
    const json = JSON.parse(readFileSync(modelPath, 'utf8'));
    assert.deepEqual(json.weightsManifest[0].paths, ['group1-shard1of3.bin', 'group1-shard2of3.bin', 'group1-shard3of3.bin']);
    assert.deepEqual(json.weightsManifest[1].paths, ['group2-shard1of1.bin']);
  });

  test('every weight is listed in manifest order with its values, the string one left out with a warning', async () => {
    const modelPath = writeTfjsModel(freshFolder(), LAYERS_MODEL);
    await withModel(modelPath, async (checkpoint) => {
      assert.equal(checkpoint.format, 'tfjs');
      assert.deepEqual(
        checkpoint.tensors.map((tensor) => tensor.name),
        [...EXPECTED.keys()],
      );
      assert.deepEqual(checkpoint.warnings, ['weight "vocabulary" has dtype string, which this tool does not read; it is left out']);
      for (const [name, expected] of EXPECTED) {
        assert.equal(tensorNamed(checkpoint, name).dtype, expected.dtype, name);
        assert.deepEqual(await values(checkpoint, name), expected.values, name);
      }
    });
  });

  test('TF.js itself decodes the same values from the same files', async () => {
    const modelPath = writeTfjsModel(freshFolder(), LAYERS_MODEL);
    const reference = decodedByTfjs(modelPath);
    assert.equal(reference.size, EXPECTED.size);
    for (const [name, expected] of EXPECTED) assert.deepEqual(reference.get(name), expected.values, `TF.js: ${name}`);
  });

  test('a weight spanning two shards reads whole and in parts across the boundary', async () => {
    const modelPath = writeTfjsModel(freshFolder(), LAYERS_MODEL);
    await withModel(modelPath, async (checkpoint) => {
      const bias = tensorNamed(checkpoint, 'dense_Dense1/bias');
      // Bytes 24..36 of the group: elements 0 and 1 in shard 1, element 2 in shard 2.
      assert.deepEqual(Array.from(await bias.read(1, 2)), [Math.fround(0.2), Math.fround(-0.3)]);
      assert.deepEqual(Array.from(await bias.read(2, 1)), [Math.fround(-0.3)]);
      const streamed: number[] = [];
      for await (const chunk of bias.chunks({ chunkElements: 1 })) streamed.push(...chunk);
      assert.deepEqual(streamed, EXPECTED.get('dense_Dense1/bias')!.values);
    });
  });

  test('quantized weights say how they were stored', async () => {
    const modelPath = writeTfjsModel(freshFolder(), LAYERS_MODEL);
    await withModel(modelPath, async (checkpoint) => {
      assert.deepEqual(tensorNamed(checkpoint, 'dense_Dense2/kernel').quantization, { scheme: 'uint8 scale/min', bitsPerValue: 8 });
      assert.deepEqual(tensorNamed(checkpoint, 'dense_Dense3/kernel').quantization, { scheme: 'uint16 scale/min', bitsPerValue: 16 });
      assert.deepEqual(tensorNamed(checkpoint, 'dense_Dense2/bias').quantization, { scheme: 'float16', bitsPerValue: 16 });
      assert.equal(tensorNamed(checkpoint, 'dense_Dense2/kernel').byteSize, 6, 'the bytes stored, one per code');
      assert.equal(tensorNamed(checkpoint, 'dense_Dense1/kernel').quantization, undefined);
    });
  });

  test('metadata: format, producers, a topology summary and the user-defined metadata', async () => {
    const modelPath = writeTfjsModel(freshFolder(), LAYERS_MODEL);
    await withModel(modelPath, async (checkpoint) => {
      assert.deepEqual(checkpoint.metadata, {
        format: 'layers-model',
        generatedBy: 'keras v2.13.1',
        convertedBy: 'TensorFlow.js Converter v4.22.0',
        modelTopology: { kind: 'layers', class_name: 'Sequential', keras_version: 'tfjs-layers 4.22.0', backend: 'tensor_flow.js', layers: 3 },
        userDefinedMetadata: { base: 'org/base-model', epochs: 3 },
      });
    });
  });

  test('a topology converted from Keras (under model_config) and a graph topology are summarised too', async () => {
    const keras = writeTfjsModel(freshFolder(), {
      groups: [],
      fields: { modelTopology: { keras_version: '2.4.0', backend: 'tensorflow', model_config: { class_name: 'Functional', config: { layers: [{}, {}] } } } },
    });
    await withModel(keras, async (checkpoint) => {
      assert.deepEqual(checkpoint.metadata['modelTopology'], { kind: 'layers', class_name: 'Functional', keras_version: '2.4.0', backend: 'tensorflow', layers: 2 });
      assert.deepEqual(checkpoint.tensors, []);
    });
    const graph = writeTfjsModel(freshFolder(), {
      groups: [],
      fields: { format: 'graph-model', modelTopology: { node: [{ name: 'a', op: 'Const' }, { name: 'b', op: 'Relu' }], versions: { producer: 1205 } } },
    });
    await withModel(graph, async (checkpoint) => {
      assert.deepEqual(checkpoint.metadata, { format: 'graph-model', modelTopology: { kind: 'graph', nodes: 2, producer: 1205 } });
    });
  });
});

describe('TF.js weights encoded by TensorFlow.js itself', () => {
  test('string weights are walked, including strings that cross shard boundaries', async () => {
    const named: tf.NamedTensorMap = {
      'embedding/table': tf.tensor([1.5, -2, 0.25, 8], [2, 2]),
      'lookup/keys': tf.tensor(['', 'ünïcode', 'a longer key that spans shards'], [3], 'string'),
      'lookup/values': tf.tensor([3, -9, 12], [3], 'int32'),
      'flags': tf.tensor([true, false], [2], 'bool'),
      'head/bias': tf.tensor([0.125, -0.5], [2]),
    };
    const { data, specs } = await tf.io.encodeWeights(named);
    Object.values(named).forEach((tensor) => tensor.dispose());
    const modelPath = writeTfjsModel(freshFolder(), { groups: [{ entries: specs, data: Buffer.from(data), shardBytes: 7 }] });
    const reference = decodedByTfjs(modelPath);
    await withModel(modelPath, async (checkpoint) => {
      assert.deepEqual(
        checkpoint.tensors.map((tensor) => tensor.name),
        ['embedding/table', 'lookup/values', 'flags', 'head/bias'],
      );
      assert.match(checkpoint.warnings.join('\n'), /"lookup\/keys" has dtype string/);
      for (const tensor of checkpoint.tensors) assert.deepEqual(Array.from(await tensor.read()), reference.get(tensor.name), tensor.name);
      assert.deepEqual(await values(checkpoint, 'head/bias'), [0.125, -0.5]);
    });
  });
});

describe('a real TF.js model shipped inside node_modules', () => {
  // VS Code's language detection model: a graph model converted by the TF.js converter, with
  // uint8-quantized weights and string constants. It is present once the VS Code test host is installed.
  const modelPath = path.join(
    REPO_ROOT,
    'test/.vscode-server/node_modules/code-server/lib/vscode/node_modules/@vscode/vscode-languagedetection/model/model.json',
  );

  test('opens, and every weight reads as TF.js decodes it', { skip: !existsSync(modelPath) && 'the VS Code test host is not installed' }, async () => {
    const manifest = JSON.parse(readFileSync(modelPath, 'utf8')) as { convertedBy: string; weightsManifest: tf.io.WeightsManifestConfig };
    const entries = manifest.weightsManifest.flatMap((group) => group.weights);
    const reference = decodedByTfjs(modelPath);
    assert.equal(await isTfjsModelJson(modelPath), true);
    await withModel(modelPath, async (checkpoint) => {
      assert.equal(checkpoint.metadata['format'], 'graph-model');
      assert.equal(checkpoint.metadata['convertedBy'], manifest.convertedBy);
      assert.match(String(checkpoint.metadata['convertedBy']), /^TensorFlow\.js Converter v/);
      assert.equal((checkpoint.metadata['modelTopology'] as { kind: string }).kind, 'graph');
      const stringCount = entries.filter((entry) => entry.dtype === 'string').length;
      assert.equal(checkpoint.tensors.length, entries.length - stringCount);
      assert.equal(checkpoint.warnings.length, stringCount);
      const quantized = checkpoint.tensors.filter((tensor) => tensor.quantization?.scheme === 'uint8 scale/min');
      assert.ok(quantized.length > 0, 'the model has uint8-quantized weights');
      for (const tensor of checkpoint.tensors) assert.deepEqual(Array.from(await tensor.read()), reference.get(tensor.name), tensor.name);
    });
  });
});

describe('TF.js model.json detection', () => {
  test('sniff: a model.json by name, other .json files by a top-level key in their first bytes', () => {
    assert.equal(tfjsReader.sniff('runs/a/model.json', Buffer.from('{"format": "layers-model"')), true);
    assert.equal(tfjsReader.sniff('runs/a/Model.JSON', Buffer.from('{')), true);
    assert.equal(tfjsReader.sniff('runs/a/web.json', Buffer.from('{"modelTopology": {')), true);
    assert.equal(tfjsReader.sniff('runs/a/config.json', Buffer.from('{"_name_or_path": "x"}')), false);
    assert.equal(tfjsReader.sniff('a/model.safetensors.index.json', Buffer.from('{"weightsManifest"')), false);
    assert.equal(tfjsReader.sniff('a/model.bin', Buffer.from('{"weightsManifest"')), false);
  });

  test('isTfjsModelJson looks past the first 64 bytes, whatever the key order', async () => {
    const folder = freshFolder();
    const converted = path.join(folder, 'web_model.json');
    const signature = { inputs: { x: { name: 'x:0', dtype: 'DT_FLOAT', tensorShape: { dim: [{ size: '-1' }, { size: '784' }] } } } };
    writeFileSync(converted, JSON.stringify({ format: 'graph-model', generatedBy: '2.15.0', convertedBy: 'TensorFlow.js Converter v4.22.0', signature, modelTopology: {} }));
    assert.ok(readFileSync(converted, 'utf8').indexOf('"modelTopology"') > 64, 'the key lies beyond what a sniff sees');
    assert.equal(await isTfjsModelJson(converted), true);
    const config = path.join(folder, 'config.json');
    writeFileSync(config, JSON.stringify({ architectures: ['BertModel'], hidden_size: 768 }));
    assert.equal(await isTfjsModelJson(config), false);
    const notJson = path.join(folder, 'notes.json');
    writeFileSync(notJson, 'modelTopology is a key of model.json');
    assert.equal(await isTfjsModelJson(notJson), false);
    assert.equal(await isTfjsModelJson(path.join(folder, 'missing.json')), false);
    assert.equal(await isTfjsModelJson(path.join(folder, 'model.bin')), false);
  });
});

describe('TF.js bad input', () => {
  const small = (shardBytes = 8): TfjsModelSpec => ({
    groups: [
      weightGroup(
        [
          { name: 'w', shape: [2], dtype: 'float32', data: float32(1, 2) },
          { name: 'b', shape: [1], dtype: 'float32', data: float32(3) },
        ],
        shardBytes,
      ),
    ],
  });

  test('empty, not JSON, not an object, or without a weightsManifest', async () => {
    const folder = freshFolder();
    const file = path.join(folder, 'model.json');
    for (const [contents, problem] of [
      ['', /the file is empty/],
      ['{"weightsManifest": [', /not valid JSON/],
      ['[1, 2]', /holds a list, not a TF.js model object/],
      ['{"modelTopology": {}}', /no "weightsManifest"/],
      ['{"weightsManifest": {}}', /"weightsManifest" is an object, not a list of weight groups/],
      ['{"weightsManifest": [{"paths": [3], "weights": []}]}', /weight group 1: "paths" is a list, not a list of shard file names/],
    ] as const) {
      writeFileSync(file, contents);
      await assertRefused(file, problem);
    }
    writeFileSync(file, Buffer.from([0x7b, 0xff, 0x7d]));
    await assertRefused(file, /not valid UTF-8/);
  });

  test('a shard path escaping the folder is refused', async () => {
    const parent = freshFolder();
    writeFileSync(path.join(parent, 'outside.bin'), float32(1, 2, 3));
    const folder = path.join(parent, 'model');
    mkdirSync(folder);
    const modelPath = writeTfjsModel(folder, small(100));
    for (const escaping of ['../outside.bin', path.join(parent, 'outside.bin'), 'sub/../../outside.bin', '.']) {
      editModelJson(modelPath, (json) => {
        json.weightsManifest[0]!.paths = [escaping];
      });
      await assertRefused(modelPath, new RegExp(`shard "${escaping.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}" is not a file inside the model's folder`));
    }
  });

  test('a missing shard is named', async () => {
    const folder = freshFolder();
    const modelPath = writeTfjsModel(folder, small());
    unlinkSync(path.join(folder, 'group1-shard2of2.bin'));
    await assertRefused(modelPath, /shard "group1-shard2of2\.bin" of weight group 1 cannot be opened \(cannot open: ENOENT\)/);
  });

  test('a short shard is named', async () => {
    const folder = freshFolder();
    const modelPath = writeTfjsModel(folder, small());
    truncateSync(path.join(folder, 'group1-shard2of2.bin'), 2);
    await assertRefused(modelPath, /weight "b" needs bytes 8\.\.12 of weight group 1, but its shards hold only 10: shard "group1-shard2of2\.bin" is short/);
  });

  test('a truncated shard in the middle of a group is named', async () => {
    const folder = freshFolder();
    const modelPath = writeTfjsModel(folder, LAYERS_MODEL);
    truncateSync(path.join(folder, 'group1-shard2of3.bin'), 30);
    await assertRefused(modelPath, /weight "counts" needs bytes 64\.\.66 of weight group 1, but its shards hold only 64: shard "group1-shard2of3\.bin" is short/);
    const other = freshFolder();
    const otherModel = writeTfjsModel(other, LAYERS_MODEL);
    truncateSync(path.join(other, 'group1-shard1of3.bin'), 31);
    await assertRefused(otherModel, /shards hold only 65: shard "group1-shard1of3\.bin" is short/);
  });

  test('shards holding more than the manifest describes are refused', async () => {
    const folder = freshFolder();
    const modelPath = writeTfjsModel(folder, small());
    writeFileSync(path.join(folder, 'group1-shard2of2.bin'), float32(3, 4));
    await assertRefused(modelPath, /weight group 1: the manifest describes 12 bytes but its shards \(group1-shard1of2\.bin, group1-shard2of2\.bin\) hold 16/);
  });

  test('huge or invalid shapes', async () => {
    const modelPath = writeTfjsModel(freshFolder(), small());
    const withShape = async (shape: unknown, problem: RegExp): Promise<void> => {
      editModelJson(modelPath, (json) => {
        json.weightsManifest[0]!.weights[0]!['shape'] = shape;
      });
      await assertRefused(modelPath, problem);
    };
    await withShape([1e9, 1e9, 1e9], /weight "w": shape \[.*\] is too large/);
    await withShape([100_000, 100_000], /weight "w" needs bytes 0\.\.40000000000 of weight group 1, but its shards hold only 12/);
    await withShape([-2], /invalid dimension -2/);
    await withShape([1.5], /invalid dimension 1\.5/);
    await withShape('2', /weight "w": shape is a string \("2"\), not a list of numbers/);
  });

  test('a string weight whose lengths run past the shards', async () => {
    const folder = freshFolder();
    const longer = Buffer.concat([strings('ab'), Buffer.from([0xe8, 0x03, 0, 0, 0x61])]);
    const modelPath = writeTfjsModel(folder, { groups: [weightGroup([{ name: 's', shape: [2], dtype: 'string', data: longer }], 64)] });
    await assertRefused(modelPath, /weight "s" needs more than the bytes from 0 of weight group 1, but its shards hold only 11/);
    editModelJson(modelPath, (json) => {
      json.weightsManifest[0]!.weights[0]!['shape'] = [1_000_000];
    });
    await assertRefused(modelPath, /weight "s" needs more than the bytes from 0 of weight group 1/);
  });

  test('unknown dtypes and malformed quantization', async () => {
    const modelPath = writeTfjsModel(freshFolder(), small());
    const withWeight = async (changes: Record<string, unknown>, problem: RegExp): Promise<void> => {
      editModelJson(modelPath, (json) => {
        json.weightsManifest[0]!.weights[0] = { name: 'w', shape: [2], dtype: 'float32', ...changes };
      });
      await assertRefused(modelPath, problem);
    };
    await withWeight({ dtype: 'float64' }, /weight "w": unknown dtype a string \("float64"\)/);
    await withWeight({ dtype: 'constructor' }, /weight "w": unknown dtype a string \("constructor"\)/);
    await withWeight({ quantization: { dtype: 'toString', scale: 1, min: 0 } }, /unknown quantization dtype a string \("toString"\)/);
    await withWeight({ quantization: { dtype: 'int4', scale: 1, min: 0 } }, /unknown quantization dtype a string \("int4"\)/);
    await withWeight({ quantization: { dtype: 'uint8', min: 0 } }, /uint8 quantization needs a finite "scale" and "min", found missing and a number \(0\)/);
    await withWeight({ dtype: 'int32', quantization: { dtype: 'float16' } }, /float16 quantization of a int32 weight/);
    await withWeight({ dtype: 'bool', quantization: { dtype: 'uint8', scale: 1, min: 0 } }, /uint8 quantization of a bool weight/);
    await withWeight({ name: 'b', shape: [2] }, /weight "b" is listed twice/);
    await withWeight({ name: 7 }, /weight group 1: a weight's name is a number \(7\)/);
  });
});
