import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CheckpointError } from '../../server/src/engine/errors';
import { AffineTensor } from '../../server/src/engine/formats/affineTensor';
import type { Checkpoint } from '../../server/src/engine/formats/checkpoint';
import { DEFAULT_MAX_DEPTH, FlatBuffer, type FlatTable } from '../../server/src/engine/formats/flatbuffers';
import { StoredTensor } from '../../server/src/engine/formats/tensor';
import { tfliteReader } from '../../server/src/engine/formats/tflite';
import { BufferSource } from '../../server/src/engine/io/byteSource';
import { makeTempDir } from '../helpers';
import { tensorNamed, usingCheckpoint } from './checkpointTesting';
import {
  BuiltinOperator,
  TensorType,
  buildFlatBuffer,
  encodeTflite,
  fb,
  float32,
  float64,
  int16,
  int32,
  int64,
  int8,
  uint16,
  uint8,
  type FbTable,
  type TfliteModel,
  type TfliteQuantization,
} from './tfliteWriter';

let temp: { dir: string; cleanup: () => void };
before(() => {
  temp = makeTempDir('tflite-test-');
});
after(() => temp.cleanup());

let fileCounter = 0;
function writeTemp(contents: Buffer): string {
  const file = path.join(temp.dir, `model${++fileCounter}.tflite`);
  writeFileSync(file, contents);
  return file;
}

function withModel<T>(file: string, use: (checkpoint: Checkpoint) => Promise<T>): Promise<T> {
  return usingCheckpoint(tfliteReader.open(file), use);
}

async function assertRefused(file: string, problem: RegExp): Promise<void> {
  await assert.rejects(tfliteReader.open(file), (error: unknown) => {
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

/** A small float classifier as the converter writes it: input, weights, bias, activations, output. */
const FLOAT_MODEL: TfliteModel = {
  description: 'MLIR Converted.',
  operatorCodes: [{ builtin: BuiltinOperator.FULLY_CONNECTED, version: 9 }, { builtin: BuiltinOperator.SOFTMAX }],
  metadata: [
    { name: 'min_runtime_version', data: Buffer.concat([Buffer.from('1.14.0'), Buffer.alloc(10)]) },
    { name: 'CONVERSION_METADATA', data: Buffer.from([0x10, 0x00, 0x00, 0x00, 0x0c, 0x00]) },
  ],
  subgraphs: [
    {
      name: 'main',
      tensors: [
        { name: 'serving_default_x:0', shape: [1, 3], type: TensorType.FLOAT32 },
        { name: 'dense/MatMul', shape: [2, 3], type: TensorType.FLOAT32, data: float32(0.5, -1, 2, 0.25, -0.125, 3) },
        { name: 'dense/BiasAdd/ReadVariableOp', shape: [2], type: TensorType.FLOAT32, data: float32(0.1, -0.2) },
        { name: 'dense/BiasAdd', shape: [1, 2], type: TensorType.FLOAT32, ownEmptyBuffer: true },
        { name: 'StatefulPartitionedCall:0', shape: [1, 2], type: TensorType.FLOAT32 },
      ],
      operators: [
        [0, [0, 1, 2], [3]],
        [1, [3], [4]],
      ],
    },
  ],
};

describe('TFLite float models', () => {
  test('constant tensors are listed with their values; activations are not', async () => {
    const file = writeTemp(encodeTflite(FLOAT_MODEL).bytes);
    await withModel(file, async (checkpoint) => {
      assert.equal(checkpoint.format, 'tflite');
      assert.deepEqual(checkpoint.warnings, []);
      assert.deepEqual(
        checkpoint.tensors.map((tensor) => tensor.name),
        ['dense/MatMul', 'dense/BiasAdd/ReadVariableOp'],
      );
      const kernel = tensorNamed(checkpoint, 'dense/MatMul');
      assert.equal(kernel.dtype, 'F32');
      assert.deepEqual(kernel.shape, [2, 3]);
      assert.equal(kernel.byteSize, 24);
      assert.equal(kernel.quantization, undefined);
      assert.deepEqual(await values(checkpoint, 'dense/MatMul'), [0.5, -1, 2, 0.25, -0.125, 3]);
      assert.deepEqual(await values(checkpoint, 'dense/BiasAdd/ReadVariableOp'), [Math.fround(0.1), Math.fround(-0.2)]);
      assert.deepEqual(Array.from(await kernel.read(2, 3)), [2, 0.25, -0.125]);
    });
  });

  test('metadata: schema version, description, metadata names, runtime version and operators', async () => {
    const file = writeTemp(encodeTflite(FLOAT_MODEL).bytes);
    await withModel(file, async (checkpoint) => {
      assert.deepEqual(checkpoint.metadata, {
        version: 3,
        description: 'MLIR Converted.',
        subgraphs: 1,
        metadata: ['min_runtime_version', 'CONVERSION_METADATA'],
        minRuntimeVersion: '1.14.0',
        operators: ['FULLY_CONNECTED v9', 'SOFTMAX v1'],
      });
    });
  });

  test('operator names follow the schema, past the byte-sized codes and for custom operators', async () => {
    const model: TfliteModel = {
      operatorCodes: [
        { builtin: BuiltinOperator.CONV_2D, version: 3 },
        { builtin: BuiltinOperator.BATCH_MATMUL, version: 4 },
        { builtin: BuiltinOperator.GELU },
        { builtin: BuiltinOperator.STABLEHLO_ADD },
        { builtin: BuiltinOperator.DILATE },
        { builtin: 999 },
        { builtin: BuiltinOperator.CUSTOM, custom: 'TFLite_Detection_PostProcess' },
      ],
      subgraphs: [{ tensors: [] }],
    };
    await withModel(writeTemp(encodeTflite(model).bytes), async (checkpoint) => {
      assert.deepEqual(checkpoint.metadata['operators'], [
        'CONV_2D v3',
        'BATCH_MATMUL v4',
        'GELU v1',
        'STABLEHLO_ADD v1',
        'DILATE v1',
        'BUILTIN_999 v1',
        'TFLite_Detection_PostProcess v1',
      ]);
    });
  });

  test('every mapped tensor type decodes exactly', async () => {
    const model: TfliteModel = {
      subgraphs: [
        {
          tensors: [
            { name: 'f16', shape: [4], type: TensorType.FLOAT16, data: uint16(0x3c00, 0xc000, 0x3555, 0x0001) },
            { name: 'f64', shape: [2], type: TensorType.FLOAT64, data: float64(0.1, -1e300) },
            { name: 'i64', shape: [2], type: TensorType.INT64, data: int64(-5n, 2n ** 40n) },
            { name: 'i32', shape: [2], type: TensorType.INT32, data: int32(-1, 2 ** 31 - 1) },
            { name: 'i16', shape: [2], type: TensorType.INT16, data: int16(-32768, 7) },
            { name: 'i8', shape: [2], type: TensorType.INT8, data: int8(-128, 127) },
            { name: 'u8', shape: [2], type: TensorType.UINT8, data: uint8(0, 255) },
            { name: 'bool', shape: [3], type: TensorType.BOOL, data: uint8(1, 0, 1) },
            { name: 'scalar', shape: [], type: TensorType.FLOAT32, data: float32(42) },
          ],
        },
      ],
    };
    await withModel(writeTemp(encodeTflite(model).bytes), async (checkpoint) => {
      const expected: Record<string, [string, number[]]> = {
        f16: ['F16', [1, -2, 0.333251953125, 2 ** -24]],
        f64: ['F64', [0.1, -1e300]],
        i64: ['I64', [-5, 2 ** 40]],
        i32: ['I32', [-1, 2 ** 31 - 1]],
        i16: ['I16', [-32768, 7]],
        i8: ['I8', [-128, 127]],
        u8: ['U8', [0, 255]],
        bool: ['BOOL', [1, 0, 1]],
        scalar: ['F32', [42]],
      };
      for (const [name, [dtype, expectedValues]] of Object.entries(expected)) {
        assert.equal(tensorNamed(checkpoint, name).dtype, dtype, name);
        assert.deepEqual(await values(checkpoint, name), expectedValues, name);
      }
      assert.deepEqual(tensorNamed(checkpoint, 'scalar').shape, []);
    });
  });

  test('tensors of other subgraphs are prefixed with the subgraph name; repeated names stay distinct', async () => {
    const model: TfliteModel = {
      subgraphs: [
        {
          tensors: [
            { name: 'w', shape: [1], type: TensorType.FLOAT32, data: float32(1) },
            { name: 'w', shape: [1], type: TensorType.FLOAT32, data: float32(2) },
          ],
        },
        { name: 'while_body', tensors: [{ name: 'w', shape: [1], type: TensorType.FLOAT32, data: float32(3) }] },
        { tensors: [{ name: 'w', shape: [1], type: TensorType.FLOAT32, data: float32(4) }] },
      ],
    };
    await withModel(writeTemp(encodeTflite(model).bytes), async (checkpoint) => {
      assert.deepEqual(
        checkpoint.tensors.map((tensor) => tensor.name),
        ['w', 'w#1', 'while_body/w', 'subgraph2/w'],
      );
      assert.deepEqual(await values(checkpoint, 'w#1'), [2]);
      assert.deepEqual(await values(checkpoint, 'subgraph2/w'), [4]);
      assert.equal(checkpoint.metadata['subgraphs'], 3);
    });
  });

  test('tensors sharing one buffer each read it', async () => {
    const model: TfliteModel = {
      subgraphs: [
        {
          tensors: [
            { name: 'a', shape: [2], type: TensorType.FLOAT32, data: float32(1, 2) },
            { name: 'b', shape: [2], type: TensorType.FLOAT32, sharesBufferWith: 'a' },
          ],
        },
      ],
    };
    await withModel(writeTemp(encodeTflite(model).bytes), async (checkpoint) => {
      assert.deepEqual(await values(checkpoint, 'b'), [1, 2]);
    });
  });

  test('string, int4 and sparse tensors are left out with a warning', async () => {
    const model: TfliteModel = {
      subgraphs: [
        {
          tensors: [
            { name: 'vocab', shape: [1], type: TensorType.STRING, data: Buffer.from([1, 0, 0, 0, 8, 0, 0, 0, 0x61]) },
            { name: 'packed', shape: [4], type: TensorType.INT4, data: uint8(0x12, 0x34) },
            { name: 'pruned', shape: [2], type: TensorType.FLOAT32, data: float32(1), sparse: true },
            { name: 'kept', shape: [1], type: TensorType.FLOAT32, data: float32(5) },
          ],
        },
      ],
    };
    await withModel(writeTemp(encodeTflite(model).bytes), async (checkpoint) => {
      assert.deepEqual(
        checkpoint.tensors.map((tensor) => tensor.name),
        ['kept'],
      );
      assert.equal(checkpoint.warnings.length, 3);
      assert.match(checkpoint.warnings[0]!, /"vocab" holds STRING values/);
      assert.match(checkpoint.warnings[1]!, /"packed" holds INT4 values/);
      assert.match(checkpoint.warnings[2]!, /"pruned" is stored sparse/);
    });
  });

  test('sniff: the .tflite extension or the TFL3 identifier', () => {
    const head = encodeTflite(FLOAT_MODEL).bytes.subarray(0, 64);
    assert.equal(tfliteReader.sniff('a/model.tflite', Buffer.alloc(8)), true);
    assert.equal(tfliteReader.sniff('a/model.bin', head), true);
    assert.equal(tfliteReader.sniff('a/model.bin', Buffer.from('PK\x03\x04TFL2')), false);
    assert.equal(tfliteReader.sniff('a/model.bin', Buffer.alloc(3)), false);
  });
});

describe('TFLite quantized models', () => {
  /** Scales that are powers of two keep the expected values exact and easy to check by hand. */
  const perChannelRows: TfliteQuantization = { scale: [0.5, 0.25, 0.125], zeroPoint: [0, 0, 0], axis: 0 };
  const perChannelColumns: TfliteQuantization = { scale: [1, 0.5, 0.25], zeroPoint: [0, 1, -1], axis: 1 };
  const model: TfliteModel = {
    subgraphs: [
      {
        tensors: [
          { name: 'input_int8', shape: [1, 2], type: TensorType.INT8, quantization: { scale: [0.0078125], zeroPoint: [-128] } },
          // [3, 2]: row r uses scale[r].
          { name: 'conv/kernel', shape: [3, 2], type: TensorType.INT8, data: int8(2, -4, 8, 127, -128, 3), quantization: perChannelRows },
          // [2, 3]: column c uses scale[c] and zero_point[c].
          { name: 'dense/kernel', shape: [2, 3], type: TensorType.INT8, data: int8(4, 5, 7, -4, 1, -1), quantization: perChannelColumns },
          { name: 'legacy/weights', shape: [3], type: TensorType.UINT8, data: uint8(128, 0, 255), quantization: { scale: [0.5], zeroPoint: [128] } },
          { name: 'int16/weights', shape: [2], type: TensorType.INT16, data: int16(-32768, 1000), quantization: { scale: [2 ** -10], zeroPoint: [0] } },
          { name: 'conv/bias', shape: [3], type: TensorType.INT32, data: int32(-1000, 0, 4096), quantization: { scale: [2 ** -8, 2 ** -9, 2 ** -12], zeroPoint: [0, 0, 0], axis: 0 } },
          { name: 'a/tenth', shape: [2], type: TensorType.INT8, data: int8(3, -7), quantization: { scale: [0.1], zeroPoint: [0] } },
          { name: 'shape/const', shape: [2], type: TensorType.INT32, data: int32(-1, 6) },
          { name: 'float/with_minmax', shape: [1], type: TensorType.FLOAT32, data: float32(1.5), quantization: { scale: [0.5], zeroPoint: [0] } },
        ],
      },
    ],
  };

  test('int8 per-channel along either axis, uint8 and int16 per-tensor, int32 biases: dequantized exactly', async () => {
    await withModel(writeTemp(encodeTflite(model).bytes), async (checkpoint) => {
      assert.deepEqual(checkpoint.warnings, []);
      assert.deepEqual(await values(checkpoint, 'conv/kernel'), [1, -2, 2, 31.75, -16, 0.375]);
      assert.deepEqual(await values(checkpoint, 'dense/kernel'), [4, 2, 2, -4, 0, 0]);
      assert.deepEqual(await values(checkpoint, 'legacy/weights'), [0, -64, 63.5]);
      assert.deepEqual(await values(checkpoint, 'int16/weights'), [-32, 1000 / 1024]);
      assert.deepEqual(await values(checkpoint, 'conv/bias'), [-1000 / 256, 0, 1]);
    });
  });

  test('dequantized values are float32 results, as TFLite computes them', async () => {
    await withModel(writeTemp(encodeTflite(model).bytes), async (checkpoint) => {
      const scale = Math.fround(0.1);
      assert.deepEqual(await values(checkpoint, 'a/tenth'), [Math.fround(3 * scale), Math.fround(-7 * scale)]);
      assert.notEqual(Math.fround(3 * scale), 3 * 0.1, 'the check distinguishes float32 from float64 arithmetic');
    });
  });

  test('quantized tensors say so; unquantized integer and float tensors are read as stored', async () => {
    await withModel(writeTemp(encodeTflite(model).bytes), async (checkpoint) => {
      const kernel = tensorNamed(checkpoint, 'conv/kernel');
      assert.equal(kernel.dtype, 'F32');
      assert.deepEqual(kernel.quantization, { scheme: 'int8 per-channel', bitsPerValue: 8 });
      assert.equal(kernel.byteSize, 6, 'the bytes stored, one per code');
      assert.deepEqual(tensorNamed(checkpoint, 'legacy/weights').quantization, { scheme: 'uint8 per-tensor', bitsPerValue: 8 });
      assert.deepEqual(tensorNamed(checkpoint, 'int16/weights').quantization, { scheme: 'int16 per-tensor', bitsPerValue: 16 });
      assert.deepEqual(tensorNamed(checkpoint, 'conv/bias').quantization, { scheme: 'int32 per-channel', bitsPerValue: 32 });
      const shape = tensorNamed(checkpoint, 'shape/const');
      assert.equal(shape.dtype, 'I32');
      assert.equal(shape.quantization, undefined);
      assert.deepEqual(await values(checkpoint, 'shape/const'), [-1, 6]);
      assert.deepEqual(await values(checkpoint, 'float/with_minmax'), [1.5]);
      assert.ok(!checkpoint.tensors.some((tensor) => tensor.name === 'input_int8'), 'a quantized activation is not listed');
    });
  });

  test('partial reads and small chunks keep each element on its own channel', async () => {
    await withModel(writeTemp(encodeTflite(model).bytes), async (checkpoint) => {
      const rows = tensorNamed(checkpoint, 'conv/kernel');
      const columns = tensorNamed(checkpoint, 'dense/kernel');
      assert.deepEqual(Array.from(await rows.read(3, 2)), [31.75, -16]);
      assert.deepEqual(Array.from(await columns.read(2, 3)), [2, -4, 0]);
      for (const [tensor, expected] of [
        [rows, [1, -2, 2, 31.75, -16, 0.375]],
        [columns, [4, 2, 2, -4, 0, 0]],
      ] as const) {
        const streamed: number[] = [];
        for await (const chunk of tensor.chunks({ chunkElements: 4 })) streamed.push(...chunk);
        assert.deepEqual(streamed, expected);
      }
    });
  });

  test('custom quantization is left out with a warning', async () => {
    const custom: TfliteModel = {
      subgraphs: [
        {
          tensors: [
            { name: 'custom', shape: [2], type: TensorType.INT8, data: int8(1, 2), quantization: { scale: [1], zeroPoint: [0], custom: Buffer.from([9, 9]) } },
          ],
        },
      ],
    };
    await withModel(writeTemp(encodeTflite(custom).bytes), async (checkpoint) => {
      assert.deepEqual(checkpoint.tensors, []);
      assert.match(checkpoint.warnings[0]!, /"custom" uses custom quantization/);
    });
  });

  test('scales that do not match the quantized dimension are refused', async () => {
    const wrong: TfliteModel = {
      subgraphs: [
        {
          tensors: [
            { name: 'k', shape: [2, 3], type: TensorType.INT8, data: int8(1, 2, 3, 4, 5, 6), quantization: { scale: [1, 2], zeroPoint: [0, 0], axis: 1 } },
          ],
        },
      ],
    };
    const file = writeTemp(encodeTflite(wrong).bytes);
    await assertRefused(file, /tensor "k": 2 per-channel scales along dimension 1, which has size 3/);
    const mismatched: TfliteModel = {
      subgraphs: [
        {
          tensors: [
            { name: 'k', shape: [2], type: TensorType.INT8, data: int8(1, 2), quantization: { scale: [1, 2], zeroPoint: [0], axis: 0 } },
          ],
        },
      ],
    };
    await assertRefused(writeTemp(encodeTflite(mismatched).bytes), /2 scales but 1 zero points/);
  });
});

describe('TFLite models over 2 GB: buffers after the flatbuffer', () => {
  const model: TfliteModel = {
    externalBuffers: true,
    subgraphs: [
      {
        tensors: [
          { name: 'x', shape: [1, 3], type: TensorType.FLOAT32 },
          { name: 'w', shape: [3, 2], type: TensorType.FLOAT32, data: float32(1, 2, 3, 4, 5, 6.5) },
          { name: 'q', shape: [2, 2], type: TensorType.INT8, data: int8(-2, 2, 4, -4), quantization: { scale: [0.5, 0.25], zeroPoint: [0, 0], axis: 0 } },
          { name: 'empty', shape: [0], type: TensorType.FLOAT32, ownEmptyBuffer: true },
        ],
      },
    ],
  };

  test('weights are read at their offset and size', async () => {
    const layout = encodeTflite(model);
    const flatbufferEnd = layout.bytes.indexOf(float32(1, 2, 3, 4, 5, 6.5));
    assert.ok(flatbufferEnd > 0 && flatbufferEnd % 16 === 0, 'the data follows the flatbuffer, aligned');
    await withModel(writeTemp(layout.bytes), async (checkpoint) => {
      assert.deepEqual(
        checkpoint.tensors.map((tensor) => tensor.name),
        ['w', 'q'],
      );
      assert.deepEqual(await values(checkpoint, 'w'), [1, 2, 3, 4, 5, 6.5]);
      assert.deepEqual(await values(checkpoint, 'q'), [-1, 1, 1, -1]);
    });
  });

  test('a buffer past the end of the file (a truncated model) is refused', async () => {
    const layout = encodeTflite(model);
    const truncated = layout.bytes.subarray(0, layout.bytes.length - 8);
    await assertRefused(writeTemp(truncated), /buffer 2 \(used by tensor "q"\) lies at bytes \d+\.\.\d+, past the end of the \d+-byte file/);
  });
});

describe('TFLite bad input', () => {
  const small: TfliteModel = {
    subgraphs: [{ tensors: [{ name: 'w', shape: [2], type: TensorType.FLOAT32, data: float32(1, 2) }] }],
  };

  test('empty, too short, or not a TFLite flatbuffer', async () => {
    await assertRefused(writeTemp(Buffer.alloc(0)), /too short for a flatbuffer header/);
    await assertRefused(writeTemp(Buffer.from('TFL3')), /too short for a flatbuffer header/);
    const other = Buffer.from(encodeTflite(small).bytes);
    other.write('ONNX', 4, 'latin1');
    await assertRefused(writeTemp(other), /file identifier is "ONNX", not "TFL3"/);
  });

  test('truncated anywhere: refused, or every listed value still read exactly', async () => {
    const bytes = encodeTflite(FLOAT_MODEL).bytes;
    const expected = new Map([
      ['dense/MatMul', [0.5, -1, 2, 0.25, -0.125, 3]],
      ['dense/BiasAdd/ReadVariableOp', [Math.fround(0.1), Math.fround(-0.2)]],
    ]);
    let refused = 0;
    for (let length = 0; length < bytes.length; length += 3) {
      const file = writeTemp(bytes.subarray(0, length));
      let checkpoint: Checkpoint;
      try {
        checkpoint = await tfliteReader.open(file);
      } catch (error) {
        assert.ok(error instanceof CheckpointError, `cut at ${length}: ${String(error)}`);
        assert.equal(error.file, file);
        refused++;
        continue;
      }
      // The reader reads only the tables it needs; a cut past them leaves a readable model.
      await usingCheckpoint(Promise.resolve(checkpoint), async () => {
        for (const tensor of checkpoint.tensors) assert.deepEqual(Array.from(await tensor.read()), expected.get(tensor.name), `cut at ${length}`);
      });
    }
    assert.ok(refused > (bytes.length / 3) * 0.8, `most cuts are refused (${refused})`);
  });

  test('root offset out of range', async () => {
    const bytes = Buffer.from(encodeTflite(small).bytes);
    bytes.writeUInt32LE(bytes.length + 100, 0);
    await assertRefused(writeTemp(bytes), /the root offset at byte 0 points to byte \d+, past the end/);
  });

  test('a vtable outside the file', async () => {
    const layout = encodeTflite(small);
    const bytes = Buffer.from(layout.bytes);
    const root = layout.tables.get(layout.model)!;
    bytes.writeInt32LE(root + 1000, root);
    await assertRefused(writeTemp(bytes), /the vtable of the table at byte \d+ would lie at byte -\d+, outside the file/);
    bytes.writeInt32LE(-bytes.length, root);
    await assertRefused(writeTemp(bytes), /would lie at byte \d+, outside the file/);
  });

  test('a vtable of odd size, or a field beyond its table', async () => {
    const layout = encodeTflite(small);
    const root = layout.tables.get(layout.model)!;
    const vtable = root - layout.bytes.readInt32LE(root);
    const odd = Buffer.from(layout.bytes);
    odd.writeUInt16LE(5, vtable);
    await assertRefused(writeTemp(odd), /declares 5 bytes, not an even number/);
    const beyond = Buffer.from(layout.bytes);
    beyond.writeUInt16LE(400, vtable + 4 + 2 * 2); // the subgraphs field
    await assertRefused(writeTemp(beyond), /field 2 of the table at byte \d+ lies at 400\.\.404, outside its \d+ inline bytes/);
  });

  test('a reference of 0 (a cycle onto itself) or past 2^31', async () => {
    const layout = encodeTflite(small);
    const subgraphsField = layout.fieldAt(layout.model, 2);
    const zero = Buffer.from(layout.bytes);
    zero.writeUInt32LE(0, subgraphsField);
    await assertRefused(writeTemp(zero), /the subgraph list at byte \d+ is 0, which would point at itself/);
    const wrapped = Buffer.from(layout.bytes);
    wrapped.writeUInt32LE(0xfffffff0, subgraphsField);
    await assertRefused(writeTemp(wrapped), /beyond the 2\^31 limit/);
  });

  test('a vector longer than the file', async () => {
    const layout = encodeTflite(small);
    const bytes = Buffer.from(layout.bytes);
    const tensor = layout.tensorTables.get('w')!;
    const shapeField = layout.fieldAt(tensor, 0);
    const shapeVector = shapeField + bytes.readUInt32LE(shapeField);
    bytes.writeUInt32LE(0x10000000, shapeVector);
    await assertRefused(writeTemp(bytes), /the shape of tensor "w" at byte \d+ declares 268435456 elements of 4 bytes/);
  });

  test('huge shapes: too many dimensions, too many elements, more than the buffer holds, negative', async () => {
    const withShape = (shape: number[]): string =>
      writeTemp(encodeTflite({ subgraphs: [{ tensors: [{ name: 'w', shape, type: TensorType.FLOAT32, data: float32(1, 2) }] }] }).bytes);
    await assertRefused(withShape(new Array<number>(33).fill(1)), /the shape of tensor "w" has 33 elements, more than the 32 expected/);
    await assertRefused(withShape([2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1]), /tensor "w": shape \[.*\] is too large/);
    await assertRefused(withShape([65536, 65536]), /tensor "w" of shape \[65536, 65536\] and type FLOAT32 needs 17179869184 bytes, but its buffer holds 8/);
    await assertRefused(withShape([-1, 2]), /invalid dimension -1/);
  });

  test('a tensor naming a buffer that does not exist', async () => {
    const layout = encodeTflite(small);
    const bytes = Buffer.from(layout.bytes);
    bytes.writeUInt32LE(77, layout.fieldAt(layout.tensorTables.get('w')!, 2));
    await assertRefused(writeTemp(bytes), /tensor "w" refers to buffer 77, but the model has 2 buffers/);
  });
});

describe('flatbuffer reader limits', () => {
  /** A chain of `depth` tables, each holding the next in field 0. */
  function chain(depth: number): Buffer {
    let table: FbTable = fb.table();
    for (let level = 0; level < depth; level++) table = fb.table(fb.ref(table));
    return buildFlatBuffer(table, 'TEST').bytes;
  }

  async function descend(bytes: Buffer, maxDepth?: number): Promise<number> {
    const buffer = await FlatBuffer.open(new BufferSource(bytes, 'chain.bin'), 'TEST', maxDepth === undefined ? {} : { maxDepth });
    let table: FlatTable | undefined = await buffer.root();
    let levels = 0;
    for (;;) {
      const next: FlatTable | undefined = await table.table(0, 'the next table');
      if (next === undefined) return levels;
      table = next;
      levels++;
    }
  }

  test('tables nested within the limit are followed to the end', async () => {
    assert.equal(await descend(chain(DEFAULT_MAX_DEPTH)), DEFAULT_MAX_DEPTH);
  });

  test('deeper nesting is refused at the limit', async () => {
    await assert.rejects(descend(chain(DEFAULT_MAX_DEPTH + 1)), (error: unknown) => {
      assert.ok(error instanceof CheckpointError);
      assert.equal(error.file, 'chain.bin');
      assert.match(error.problem, new RegExp(`tables nest deeper than ${DEFAULT_MAX_DEPTH} levels`));
      return true;
    });
    await assert.rejects(descend(chain(5), 4), /tables nest deeper than 4 levels/);
  });

  test('tables that all point at one big string exhaust the read budget instead of looping for hours', async () => {
    const shared = fb.table(fb.string('x'.repeat(512 * 1024)));
    const bytes = buildFlatBuffer(fb.table(fb.tables(new Array<FbTable>(20_000).fill(shared))), 'TEST').bytes;
    assert.ok(bytes.length < 1024 * 1024, 'the string is stored once');
    const root = await (await FlatBuffer.open(new BufferSource(bytes, 'shared.bin'), 'TEST')).root();
    const tables = (await root.tables(0, 'the tables'))!;
    const readAll = async (): Promise<number> => {
      let total = 0;
      for (let i = 0; i < tables.length; i++) total += (await (await tables.get(i)).string(0, 'the name'))!.length;
      return total;
    };
    await assert.rejects(readAll(), /shared\.bin: flatbuffer: its tables refer to the same bytes too many times \(read budget exhausted\)/);
  });

  test('absent fields take their defaults; vtables shorter than the schema mean absent fields', async () => {
    const bytes = buildFlatBuffer(fb.table(fb.scalar('int32', -3), undefined, fb.scalar('uint64', 2n ** 40n)), 'TEST').bytes;
    const root = await (await FlatBuffer.open(new BufferSource(bytes, 'fields.bin'), 'TEST')).root();
    assert.equal(root.int32(0), -3);
    assert.equal(root.has(1), false);
    assert.equal(root.int32(1, 11), 11);
    assert.equal(root.uint64(2), 2 ** 40);
    assert.equal(root.int32(9, 5), 5);
    assert.equal(await root.string(9, 'a missing string'), undefined);
  });
});

describe('AffineTensor', () => {
  const codes = (values: number[], shape: number[]): StoredTensor => new StoredTensor('codes', 'I8', shape, new BufferSource(int8(...values), 'codes.bin'));

  test('TF.js form (offset) and TFLite form (zero point) in one map', async () => {
    const tensor = new AffineTensor(
      'w',
      'F64',
      codes([0, 10, -10, 1], [2, 2]),
      { scale: [0.5, 2], zeroPoint: [0, 1], offset: [-1, 0.25], axis: 1 },
      { scheme: 'test', bitsPerValue: 8 },
      'w.bin',
    );
    assert.deepEqual(Array.from(await tensor.read()), [-1, 18.25, -6, 0.25]);
  });

  test('int32 delivery rounds as TF.js does', async () => {
    const tensor = new AffineTensor('w', 'I32', codes([1, 2, 3], [3]), { scale: [0.5], zeroPoint: [0], offset: [0.25] }, { scheme: 'test', bitsPerValue: 8 }, 'w.bin');
    assert.deepEqual(Array.from(await tensor.read()), [1, 1, 2]);
  });

  test('maps that do not fit are refused with the file named', () => {
    const make = (dtype: 'F32' | 'BF16', map: ConstructorParameters<typeof AffineTensor>[3]) => () =>
      new AffineTensor('w', dtype, codes([1, 2], [2]), map, { scheme: 'test', bitsPerValue: 8 }, 'w.bin');
    assert.throws(make('F32', { scale: [], zeroPoint: [], offset: [] }), /w\.bin: tensor "w": the quantization has no scale/);
    assert.throws(make('F32', { scale: [NaN], zeroPoint: [0], offset: [0] }), /not a finite number/);
    assert.throws(make('F32', { scale: [1, 1], zeroPoint: [0, 0], offset: [0, 0], axis: 3 }), /per-channel quantization along dimension 3 of shape \[2\]/);
    assert.throws(make('BF16', { scale: [1], zeroPoint: [0], offset: [0] }), /cannot be delivered as BF16/);
    assert.throws(make('F32', undefined), /codes of type I8 cannot be delivered as F32 without a map/);
  });
});
