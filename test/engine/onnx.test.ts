import assert from 'node:assert/strict';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CheckpointError, FileChangedError } from '../../server/src/engine/errors';
import type { Checkpoint } from '../../server/src/engine/formats/checkpoint';
import { onnxReader, readOnnxGraph, type OnnxGraph } from '../../server/src/engine/formats/onnx';
import { FileSource, type ByteSource } from '../../server/src/engine/io/byteSource';
import { fixturePath, makeTempDir } from '../helpers';
import { tensorNamed, usingCheckpoint } from './checkpointTesting';
import {
  DataType,
  bytesField,
  graph,
  graphAttribute,
  le,
  lengthDelimitedHead,
  model,
  modelOf,
  node,
  rawKey,
  tensor,
  valueInfo,
  varint,
  varintField,
  type TensorSpec,
} from './onnxWriter';

let temp: { dir: string; cleanup: () => void };
before(() => {
  temp = makeTempDir('onnx-test-');
});
after(() => temp.cleanup());

let fileCounter = 0;
function writeTemp(contents: Buffer, name = `model${++fileCounter}.onnx`): string {
  const file = path.join(temp.dir, name);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, contents);
  return file;
}

function withCheckpoint<T>(file: string, use: (checkpoint: Checkpoint) => Promise<T>): Promise<T> {
  return usingCheckpoint(onnxReader.open(file), use);
}

async function graphOf(file: string): Promise<OnnxGraph> {
  const source = await FileSource.open(file);
  try {
    return await readOnnxGraph(source, file);
  } finally {
    await source.close();
  }
}

function isCheckpointErrorFor(file: string, problem: RegExp): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${String(error)}`);
    assert.equal(error.file, file);
    assert.ok(error.message.startsWith(`${file}: `), `message names the file: ${error.message}`);
    assert.match(error.problem, problem);
    return true;
  };
}

/** Opening `file` fails with a CheckpointError that names it and matches `problem`. */
async function assertRefused(file: string, problem: RegExp): Promise<void> {
  await assert.rejects(onnxReader.open(file), isCheckpointErrorFor(file, problem));
}

const onnxFixture = (name: string): string => fixturePath('onnx', name);

interface ExpectedTensor {
  readonly name: string;
  readonly dtype: string;
  readonly shape: number[];
  readonly first: number[];
  readonly sum: number;
  readonly weightedSum: number;
}
interface ExpectedModel {
  readonly producer_name: string;
  readonly producer_version: string;
  readonly opset: number;
  readonly initializers: ExpectedTensor[];
}
const expected = JSON.parse(readFileSync(onnxFixture('expected.json'), 'utf8')) as Record<string, ExpectedModel>;

function assertClose(actual: number, wanted: number, what: string): void {
  assert.ok(Math.abs(actual - wanted) <= 1e-9 * Math.max(1, Math.abs(wanted)), `${what}: ${actual} vs ${wanted}`);
}

// ---------------------------------------------------------------------------------------

describe('ONNX models exported by PyTorch', () => {
  for (const name of ['mlp.onnx', 'cnn.onnx', 'cnn_inputs.onnx']) {
    test(`${name}: header and the initializers PyTorch wrote, value for value`, async () => {
      const want = expected[name]!;
      await withCheckpoint(onnxFixture(name), async (checkpoint) => {
        assert.equal(checkpoint.format, 'onnx');
        assert.deepEqual(checkpoint.warnings, []);
        assert.equal(checkpoint.metadata['producer_name'], want.producer_name);
        assert.equal(checkpoint.metadata['producer_version'], want.producer_version);
        assert.deepEqual(checkpoint.metadata['opset_import'], { 'ai.onnx': want.opset });
        assert.equal(typeof checkpoint.metadata['ir_version'], 'number');
        for (const entry of want.initializers) {
          const tensor = tensorNamed(checkpoint, entry.name);
          assert.equal(tensor.dtype, entry.dtype);
          assert.deepEqual(tensor.shape, entry.shape);
          const values = await tensor.read();
          assert.deepEqual(Array.from(values.subarray(0, 5)), entry.first, entry.name);
          let sum = 0;
          let weightedSum = 0;
          values.forEach((value, i) => {
            sum += value;
            weightedSum += value * ((i % 7) + 1);
          });
          assertClose(sum, entry.sum, `${entry.name} sum`);
          assertClose(weightedSum, entry.weightedSum, `${entry.name} weighted sum`);
        }
      });
    });
  }

  test('the MLP lists exactly its state dict; the CNN its folded convolutions as well', async () => {
    await withCheckpoint(onnxFixture('mlp.onnx'), async (checkpoint) => {
      assert.deepEqual(
        checkpoint.tensors.map((tensor) => tensor.name).sort(),
        expected['mlp.onnx']!.initializers.map((entry) => entry.name).sort(),
      );
    });
    await withCheckpoint(onnxFixture('cnn.onnx'), async (checkpoint) => {
      const folded = checkpoint.tensors.filter((tensor) => tensor.name.startsWith('onnx::Conv_'));
      assert.deepEqual(
        folded.map((tensor) => tensor.shape),
        [[4, 1, 3, 3], [4], [8, 4, 3, 3], [8]],
      );
    });
  });

  test('keep_initializers_as_inputs changes the graph inputs, not the values', async () => {
    const plain = await graphOf(onnxFixture('cnn.onnx'));
    const asInputs = await graphOf(onnxFixture('cnn_inputs.onnx'));
    assert.deepEqual(plain.inputs.map((input) => input.name), ['input']);
    assert.deepEqual(
      asInputs.inputs.map((input) => input.name).sort(),
      ['input', ...asInputs.initializers.keys()].sort(),
    );
    assert.deepEqual(asInputs.inputs.find((input) => input.name === 'input')?.shape, [1, 1, 28, 28]);
    await withCheckpoint(onnxFixture('cnn.onnx'), async (a) => {
      await withCheckpoint(onnxFixture('cnn_inputs.onnx'), async (b) => {
        assert.deepEqual(
          a.tensors.map((tensor) => tensor.name),
          b.tensors.map((tensor) => tensor.name),
        );
        for (const tensor of a.tensors) assert.deepEqual(await tensorNamed(b, tensor.name).read(), await tensor.read(), tensor.name);
      });
    });
  });

  test('readOnnxGraph gives nodes, inputs and outputs with shapes, and where each initializer lies', async () => {
    const file = onnxFixture('mlp.onnx');
    const mlp = await graphOf(file);
    assert.equal(mlp.path, file);
    assert.equal(mlp.opsets.get(''), 14);
    assert.deepEqual(
      mlp.nodes.map((entry) => entry.opType),
      ['Gemm', 'Relu', 'Gemm', 'Relu', 'Gemm'],
    );
    assert.deepEqual(mlp.nodes[0]!.inputs, ['input', 'fc1.weight', 'fc1.bias']);
    assert.equal(mlp.nodes[4]!.outputs[0], 'logits');
    assert.deepEqual(mlp.inputs, [{ name: 'input', elemType: DataType.FLOAT, shape: ['batch', 784] }]);
    assert.equal(mlp.outputs[0]!.name, 'logits');
    const weight = mlp.initializers.get('fc1.weight');
    assert.ok(weight?.storage.kind === 'raw');
    assert.equal(weight.storage.length, 32 * 784 * 4);
    assert.deepEqual(weight.dims, [32, 784]);
    // The recorded raw_data range holds the values the reader returns.
    const bytes = readFileSync(file).subarray(weight.storage.offset, weight.storage.offset + 8);
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'fc1.weight').read(0, 2)), [bytes.readFloatLE(0), bytes.readFloatLE(4)]);
    });
    const bytesOfGraph = readFileSync(file);
    assert.equal(bytesOfGraph.length, mlp.modelSize);
    assert.equal(bytesOfGraph[mlp.graphField.start], 0x3a, 'the graph field starts with the tag of field 7');
  });
});

// ---------------------------------------------------------------------------------------

describe('ONNX element types', () => {
  const f16 = (...codes: number[]): Buffer => le.u16(...codes);
  /** Each ONNX type with raw_data and the exact values it decodes to. */
  const rawCases: { spec: TensorSpec; dtype: string; values: number[] }[] = [
    { spec: { name: 'float', dataType: DataType.FLOAT, dims: [2, 2], raw: le.f32(0.5, -1, 2 ** -149, Infinity) }, dtype: 'F32', values: [0.5, -1, 2 ** -149, Infinity] },
    { spec: { name: 'double', dataType: DataType.DOUBLE, dims: [3], raw: le.f64(0.1, -2.5, 1e-300) }, dtype: 'F64', values: [0.1, -2.5, 1e-300] },
    { spec: { name: 'half', dataType: DataType.FLOAT16, dims: [4], raw: f16(0x3c00, 0xc000, 0x7c00, 0x0001) }, dtype: 'F16', values: [1, -2, Infinity, 2 ** -24] },
    { spec: { name: 'bfloat', dataType: DataType.BFLOAT16, dims: [2], raw: f16(0x3f80, 0xc040) }, dtype: 'BF16', values: [1, -3] },
    { spec: { name: 'e4m3', dataType: DataType.FLOAT8E4M3FN, dims: [2], raw: le.u8(0x38, 0x7e) }, dtype: 'F8_E4M3', values: [1, 448] },
    { spec: { name: 'e5m2', dataType: DataType.FLOAT8E5M2, dims: [2], raw: le.u8(0x3c, 0xc0) }, dtype: 'F8_E5M2', values: [1, -2] },
    { spec: { name: 'int8', dataType: DataType.INT8, dims: [3], raw: le.i8(-128, 127, -1) }, dtype: 'I8', values: [-128, 127, -1] },
    { spec: { name: 'uint8', dataType: DataType.UINT8, dims: [3], raw: le.u8(0, 255, 7) }, dtype: 'U8', values: [0, 255, 7] },
    { spec: { name: 'int16', dataType: DataType.INT16, dims: [3], raw: le.i16(-32768, 32767, -1) }, dtype: 'I16', values: [-32768, 32767, -1] },
    { spec: { name: 'uint16', dataType: DataType.UINT16, dims: [3], raw: le.u16(0, 65535, 1234) }, dtype: 'U16', values: [0, 65535, 1234] },
    { spec: { name: 'int32', dataType: DataType.INT32, dims: [3], raw: le.i32(-(2 ** 31), 2 ** 31 - 1, -7) }, dtype: 'I32', values: [-(2 ** 31), 2 ** 31 - 1, -7] },
    { spec: { name: 'uint32', dataType: DataType.UINT32, dims: [2], raw: le.u32(0, 2 ** 32 - 1) }, dtype: 'U32', values: [0, 2 ** 32 - 1] },
    { spec: { name: 'int64', dataType: DataType.INT64, dims: [3], raw: le.i64(-(2n ** 63n), -1n, 2n ** 53n) }, dtype: 'I64', values: [-(2 ** 63), -1, 2 ** 53] },
    { spec: { name: 'uint64', dataType: DataType.UINT64, dims: [2], raw: le.u64(0n, 2n ** 64n - 1n) }, dtype: 'U64', values: [0, 2 ** 64] },
    { spec: { name: 'bool', dataType: DataType.BOOL, dims: [4], raw: le.u8(0, 1, 1, 0) }, dtype: 'BOOL', values: [0, 1, 1, 0] },
    { spec: { name: 'scalar', dataType: DataType.FLOAT, dims: [], raw: le.f32(3.5) }, dtype: 'F32', values: [3.5] },
    { spec: { name: 'empty', dataType: DataType.FLOAT, dims: [0, 3] }, dtype: 'F32', values: [] },
  ];

  test('raw_data of every element type decodes exactly', async () => {
    const file = writeTemp(modelOf(rawCases.map((entry) => tensor(entry.spec))));
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(checkpoint.warnings, []);
      assert.deepEqual(
        checkpoint.tensors.map((entry) => entry.name),
        rawCases.map((entry) => entry.spec.name),
      );
      for (const { spec, dtype, values } of rawCases) {
        const listed = tensorNamed(checkpoint, spec.name!);
        assert.equal(listed.dtype, dtype, spec.name);
        assert.deepEqual(listed.shape, spec.dims);
        assert.deepStrictEqual(Array.from(await listed.read()), values, spec.name);
      }
    });
  });

  /** The same values through the typed fields, where the spec puts each type. */
  const typedCases: { spec: TensorSpec; dtype: string; values: number[] }[] = [
    { spec: { name: 'float', dataType: DataType.FLOAT, dims: [4], floatData: [0.5, -1, 2 ** -149, Infinity] }, dtype: 'F32', values: [0.5, -1, 2 ** -149, Infinity] },
    { spec: { name: 'double', dataType: DataType.DOUBLE, dims: [3], doubleData: [0.1, -2.5, 1e-300] }, dtype: 'F64', values: [0.1, -2.5, 1e-300] },
    { spec: { name: 'int32', dataType: DataType.INT32, dims: [3], int32Data: [-(2 ** 31), 2 ** 31 - 1, -7] }, dtype: 'I32', values: [-(2 ** 31), 2 ** 31 - 1, -7] },
    { spec: { name: 'int16', dataType: DataType.INT16, dims: [3], int32Data: [-32768, 32767, -1] }, dtype: 'I16', values: [-32768, 32767, -1] },
    { spec: { name: 'int8', dataType: DataType.INT8, dims: [3], int32Data: [-128, 127, -1] }, dtype: 'I8', values: [-128, 127, -1] },
    { spec: { name: 'uint16', dataType: DataType.UINT16, dims: [3], int32Data: [0, 65535, 1234] }, dtype: 'U16', values: [0, 65535, 1234] },
    { spec: { name: 'uint8', dataType: DataType.UINT8, dims: [3], int32Data: [0, 255, 7] }, dtype: 'U8', values: [0, 255, 7] },
    { spec: { name: 'bool', dataType: DataType.BOOL, dims: [4], int32Data: [0, 1, 1, 0] }, dtype: 'BOOL', values: [0, 1, 1, 0] },
    // float16 and bfloat16 travel as their 16-bit patterns in int32_data.
    { spec: { name: 'half', dataType: DataType.FLOAT16, dims: [4], int32Data: [0x3c00, 0xc000, 0x7c00, 0x0001] }, dtype: 'F16', values: [1, -2, Infinity, 2 ** -24] },
    { spec: { name: 'bfloat', dataType: DataType.BFLOAT16, dims: [2], int32Data: [0x3f80, 0xc040] }, dtype: 'BF16', values: [1, -3] },
    { spec: { name: 'e4m3', dataType: DataType.FLOAT8E4M3FN, dims: [2], int32Data: [0x38, 0x7e] }, dtype: 'F8_E4M3', values: [1, 448] },
    { spec: { name: 'int64', dataType: DataType.INT64, dims: [4], int64Data: [-(2n ** 63n), -1n, 0n, 2n ** 53n] }, dtype: 'I64', values: [-(2 ** 63), -1, 0, 2 ** 53] },
    { spec: { name: 'uint32', dataType: DataType.UINT32, dims: [3], uint64Data: [0n, 2n ** 32n - 1n, 7n] }, dtype: 'U32', values: [0, 2 ** 32 - 1, 7] },
    { spec: { name: 'uint64', dataType: DataType.UINT64, dims: [3], uint64Data: [0n, 2n ** 53n + 2n, 2n ** 64n - 1n] }, dtype: 'U64', values: [0, 2 ** 53 + 2, 2 ** 64] },
  ];

  for (const packed of [true, false]) {
    test(`typed fields, ${packed ? 'packed' : 'one field per value'}, decode exactly`, async () => {
      const file = writeTemp(modelOf(typedCases.map((entry) => tensor({ ...entry.spec, packed }))));
      const { initializers } = await graphOf(file);
      assert.deepEqual(initializers.get('half')?.storage, { kind: 'typed', field: 'int32_data' });
      assert.deepEqual(initializers.get('uint32')?.storage, { kind: 'typed', field: 'uint64_data' });
      await withCheckpoint(file, async (checkpoint) => {
        assert.deepEqual(checkpoint.warnings, []);
        for (const { spec, dtype, values } of typedCases) {
          const listed = tensorNamed(checkpoint, spec.name!);
          assert.equal(listed.dtype, dtype, spec.name);
          assert.deepStrictEqual(Array.from(await listed.read()), values, spec.name);
          assert.deepStrictEqual(Array.from(await listed.read(1, values.length - 1)), values.slice(1), `${spec.name} partial`);
        }
      });
    });
  }

  test('a typed field split over several runs, packed and not, is joined in order', async () => {
    const file = writeTemp(
      modelOf([
        tensor({ name: 'floats', dataType: DataType.FLOAT, dims: [3], extra: [bytesField(4, le.f32(1, 2)), bytesField(4, le.f32(3))] }),
        tensor({ name: 'ints', dataType: DataType.INT32, dims: [4], extra: [bytesField(5, [varint(1), varint(-2)]), varintField(5, 3), varintField(5, 4)] }),
      ]),
    );
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'floats').read()), [1, 2, 3]);
      const ints = tensorNamed(checkpoint, 'ints');
      const chunks: number[][] = [];
      for await (const chunk of ints.chunks({ chunkElements: 3 })) chunks.push(Array.from(chunk));
      assert.deepEqual(chunks, [[1, -2, 3], [4]]);
    });
  });

  test('complex tensors are listed and their reading refused', async () => {
    const file = writeTemp(modelOf([tensor({ name: 'c', dataType: DataType.COMPLEX64, dims: [2], floatData: [1, 2, 3, 4] })]));
    await withCheckpoint(file, async (checkpoint) => {
      const complex = tensorNamed(checkpoint, 'c');
      assert.equal(complex.dtype, 'C64');
      await assert.rejects(complex.read(), (error: unknown) => error instanceof CheckpointError && /complex/.test(error.message));
    });
  });

  test('strings, 4-bit integers, segments and sparse initializers are left out with a warning', async () => {
    const segment = bytesField(3, [varintField(1, 0), varintField(2, 2)]);
    const file = writeTemp(
      model({
        graph: graph({
          initializers: [
            tensor({ name: 'labels', dataType: DataType.STRING, dims: [2], stringData: ['cat', 'dog'] }),
            tensor({ name: 'nibbles', dataType: DataType.INT4, dims: [4], raw: le.u8(0x12, 0x34) }),
            tensor({ name: 'part', dataType: DataType.FLOAT, dims: [4], raw: le.f32(1, 2), extra: [segment] }),
            tensor({ name: 'kept', dataType: DataType.FLOAT, dims: [1], raw: le.f32(7) }),
          ],
          extra: [bytesField(15, [bytesField(1, tensor({ name: 'v', dataType: DataType.FLOAT, dims: [1], raw: le.f32(1) }))])],
        }),
      }),
    );
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(
        checkpoint.tensors.map((entry) => entry.name),
        ['kept'],
      );
      assert.equal(checkpoint.warnings.length, 4);
      assert.match(checkpoint.warnings[0]!, /"labels" is left out: string tensors/);
      assert.match(checkpoint.warnings[1]!, /"nibbles" is left out: its element type INT4/);
      assert.match(checkpoint.warnings[2]!, /"part" is left out: it is stored in segments/);
      assert.match(checkpoint.warnings[3]!, /1 sparse initializer/);
    });
  });

  test('a quantized (QDQ) graph lists its int8 weights as stored, next to scale and zero point', async () => {
    const file = writeTemp(
      model({
        graph: graph({
          nodes: [
            node({ opType: 'DequantizeLinear', inputs: ['w_q', 'w_scale', 'w_zero'], outputs: ['w'] }),
            node({ opType: 'MatMul', inputs: ['x', 'w'], outputs: ['y'] }),
          ],
          initializers: [
            tensor({ name: 'w_q', dataType: DataType.INT8, dims: [2, 3], raw: le.i8(-128, -1, 0, 1, 64, 127) }),
            tensor({ name: 'w_scale', dataType: DataType.FLOAT, dims: [], raw: le.f32(0.25) }),
            tensor({ name: 'w_zero', dataType: DataType.INT8, dims: [], raw: le.i8(3) }),
          ],
          inputs: [valueInfo('x', DataType.FLOAT, ['n', 2])],
          outputs: [valueInfo('y', DataType.FLOAT, ['n', 3])],
        }),
      }),
    );
    await withCheckpoint(file, async (checkpoint) => {
      const weights = tensorNamed(checkpoint, 'w_q');
      assert.equal(weights.dtype, 'I8');
      assert.equal(weights.quantization, undefined);
      assert.deepEqual(Array.from(await weights.read()), [-128, -1, 0, 1, 64, 127]);
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'w_scale').read()), [0.25]);
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'w_zero').read()), [3]);
    });
  });
});

// ---------------------------------------------------------------------------------------

describe('ONNX model header and graph', () => {
  test('producer, version, doc string, opsets and metadata_props become the metadata', async () => {
    const file = writeTemp(
      modelOf([tensor({ name: 'w', dataType: DataType.FLOAT, dims: [1], raw: le.f32(1) })], {
        irVersion: 9,
        producerName: 'pytorch',
        producerVersion: '2.1.0',
        docString: 'fine-tuned on cats',
        opsets: [['', 17], ['com.microsoft', 1]],
        metadata: [['base_model', 'org/base-model'], ['producer_name', 'spoofed'], ['__proto__', 'plain']],
      }),
    );
    await withCheckpoint(file, async (checkpoint) => {
      const { metadata } = checkpoint;
      assert.equal(metadata['ir_version'], 9);
      assert.equal(metadata['producer_name'], 'pytorch');
      assert.equal(metadata['producer_version'], '2.1.0');
      assert.equal(metadata['doc_string'], 'fine-tuned on cats');
      assert.deepEqual(metadata['opset_import'], { 'ai.onnx': 17, 'com.microsoft': 1 });
      assert.equal(metadata['base_model'], 'org/base-model');
      assert.equal(Object.getPrototypeOf(metadata), Object.prototype);
      assert.equal(Object.getOwnPropertyDescriptor(metadata, '__proto__')?.value, 'plain');
      assert.deepEqual(checkpoint.warnings, ['metadata_props key "producer_name" would hide the model\'s own producer_name; it is skipped']);
    });
  });

  test('initializers inside subgraphs are not listed, and the warning says so', async () => {
    const branch = graph({
      name: 'then',
      initializers: [tensor({ name: 'inner', dataType: DataType.FLOAT, dims: [1], raw: le.f32(2) })],
      outputs: [valueInfo('inner', DataType.FLOAT, [1])],
    });
    const file = writeTemp(
      model({
        graph: graph({
          nodes: [node({ opType: 'If', inputs: ['cond'], outputs: ['out'], attributes: [graphAttribute('then_branch', branch), graphAttribute('else_branch', branch)] })],
          initializers: [tensor({ name: 'outer', dataType: DataType.FLOAT, dims: [1], raw: le.f32(1) })],
        }),
      }),
    );
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(
        checkpoint.tensors.map((entry) => entry.name),
        ['outer'],
      );
      assert.deepEqual(checkpoint.warnings, ['1 node(s) (If) hold subgraphs; initializers inside subgraphs are not listed']);
    });
    const { nodes } = await graphOf(file);
    assert.equal(nodes[0]?.hasSubgraph, true);
  });

  test('sniff wants the .onnx extension and a ModelProto start', () => {
    const head = modelOf([]).subarray(0, 64);
    assert.ok(onnxReader.sniff('/x/model.onnx', head));
    assert.ok(onnxReader.sniff('/x/MODEL.ONNX', head));
    assert.ok(onnxReader.sniff('/x/model.onnx', readFileSync(onnxFixture('mlp.onnx')).subarray(0, 64)));
    assert.ok(!onnxReader.sniff('/x/model.pt', head));
    assert.ok(!onnxReader.sniff('/x/model.onnx', Buffer.from('PK\x03\x04 a zip')));
    assert.ok(!onnxReader.sniff('/x/model.onnx', Buffer.from('{"json": true}')));
    assert.ok(!onnxReader.sniff('/x/model.onnx', Buffer.alloc(0)));
  });
});

// ---------------------------------------------------------------------------------------

describe('ONNX external data', () => {
  test('tensors in files beside the model are read from their offsets', async () => {
    const folder = path.join(temp.dir, 'external');
    writeTemp(Buffer.concat([le.f32(1.5, -2), le.i64(-3n, 2n ** 40n)]), 'external/weights.bin');
    writeTemp(le.f32(9), 'external/sub/more.bin');
    const file = writeTemp(
      modelOf([
        tensor({ name: 'a', dataType: DataType.FLOAT, dims: [2], external: [['location', 'weights.bin'], ['offset', '0'], ['length', '8']] }),
        tensor({ name: 'b', dataType: DataType.INT64, dims: [2], external: [['location', 'weights.bin'], ['offset', '8']] }),
        tensor({ name: 'c', dataType: DataType.FLOAT, dims: [1], external: [['location', 'sub/more.bin'], ['checksum', 'ignored']] }),
      ]),
      'external/model.onnx',
    );
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'a').read()), [1.5, -2]);
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'b').read()), [-3, 2 ** 40]);
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'c').read()), [9]);
    });
    const { initializers } = await graphOf(file);
    assert.deepEqual(initializers.get('b')?.storage, {
      kind: 'external',
      file: path.join(folder, 'weights.bin'),
      location: 'weights.bin',
      offset: 8,
      length: 16,
    });
  });

  test('an external file rewritten after listing is noticed', async () => {
    const data = writeTemp(le.f32(1, 2), 'changing/data.bin');
    const file = writeTemp(modelOf([tensor({ name: 'a', dataType: DataType.FLOAT, dims: [2], external: [['location', 'data.bin']] })]), 'changing/model.onnx');
    await withCheckpoint(file, async (checkpoint) => {
      writeFileSync(data, le.f32(1, 2, 3));
      await assert.rejects(tensorNamed(checkpoint, 'a').read(), FileChangedError);
    });
  });

  const externalCases: { name: string; entries: [string, string][]; problem: RegExp }[] = [
    { name: 'escaping the folder', entries: [['location', '../outside.bin']], problem: /tensor "w": external data location "\.\.\/outside\.bin" is not a file inside the model's folder/ },
    { name: 'an absolute path', entries: [['location', '/etc/passwd']], problem: /"\/etc\/passwd" is not a file inside the model's folder/ },
    { name: 'the folder itself', entries: [['location', '.']], problem: /is not a file inside the model's folder/ },
    { name: 'a missing file', entries: [['location', 'missing.bin']], problem: /tensor "w": external data file "missing\.bin" cannot be opened \(ENOENT\)/ },
    { name: 'bytes past its end', entries: [['location', 'data.bin'], ['offset', '4']], problem: /external data bytes 4\.\.12 lie past the end of "data\.bin" \(8 bytes\)/ },
    { name: 'a length that is not the tensor size', entries: [['location', 'data.bin'], ['length', '4']], problem: /external data length 4 does not match the 8 bytes its shape needs/ },
    { name: 'an offset that is not a number', entries: [['location', 'data.bin'], ['offset', '1e3']], problem: /external data offset "1e3" is not a byte count/ },
    { name: 'no location', entries: [['offset', '0']], problem: /external_data has no location/ },
  ];
  for (const { name, entries, problem } of externalCases) {
    test(`external data refused: ${name}`, async () => {
      writeTemp(le.f32(0), 'outside.bin');
      writeTemp(le.f32(1, 2), `refused${fileCounter}/data.bin`);
      const file = writeTemp(modelOf([tensor({ name: 'w', dataType: DataType.FLOAT, dims: [2], external: entries })]), `refused${fileCounter}/model.onnx`);
      await assertRefused(file, problem);
    });
  }

  test('external data together with raw_data is refused', async () => {
    const file = writeTemp(modelOf([tensor({ name: 'w', dataType: DataType.FLOAT, dims: [1], raw: le.f32(1), external: [['location', 'x.bin']] })]));
    await assertRefused(file, /tensor "w": data_location is EXTERNAL but it also holds raw_data/);
  });
});

// ---------------------------------------------------------------------------------------

describe('damaged and hostile ONNX files', () => {
  test('an empty file', async () => {
    await assertRefused(writeTemp(Buffer.alloc(0)), /the file is empty/);
  });

  test('truncated PyTorch exports, cut inside a name, inside the graph and just before its end', async () => {
    const whole = readFileSync(onnxFixture('mlp.onnx'));
    const { graphField } = await graphOf(onnxFixture('mlp.onnx'));
    for (const length of [10, Math.floor(whole.length / 2), graphField.end - 1]) {
      await assertRefused(writeTemp(whole.subarray(0, length)), /truncated or corrupt/);
    }
  });

  test('a length that claims more than its message holds', async () => {
    // The graph is consistent, but its one field declares 1000 bytes of which 10 follow.
    const graphBytes = Buffer.concat([lengthDelimitedHead(5, 1000), Buffer.alloc(10)]);
    await assertRefused(writeTemp(model({ graph: graphBytes })), /GraphProto at byte \d+: field 5 at byte \d+ declares 1000 bytes but only 10 remain/);
    // The graph field itself runs past the end of the file.
    const lying = Buffer.concat([varintField(1, 8), lengthDelimitedHead(7, 2 ** 40), Buffer.alloc(16)]);
    await assertRefused(writeTemp(lying), /ModelProto at byte 0: field 7 at byte 2 declares 1099511627776 bytes but only 16 remain/);
  });

  test('raw_data whose length does not match the shape', async () => {
    const file = writeTemp(modelOf([tensor({ name: 'w', dataType: DataType.FLOAT, dims: [3], raw: le.f32(1, 2) })]));
    await assertRefused(file, /tensor "w": raw_data holds 8 bytes, but shape \[3\] of FLOAT needs 12/);
  });

  test('negative and huge dimensions', async () => {
    await assertRefused(writeTemp(modelOf([tensor({ name: 'w', dataType: DataType.FLOAT, dims: [2, -1], raw: le.f32(1) })])), /negative dimension -1/);
    await assertRefused(
      writeTemp(modelOf([tensor({ name: 'w', dataType: DataType.FLOAT, dims: [2n ** 40n, 2n ** 40n], raw: le.f32(1) })])),
      /tensor "w": shape \[1099511627776, 1099511627776\] is too large/,
    );
    await assertRefused(writeTemp(modelOf([tensor({ name: 'w', dataType: DataType.FLOAT, dims: [2n ** 62n], raw: le.f32(1) })])), /tensor "w": invalid dimension/);
    const deep = Array.from({ length: 65 }, () => 1);
    await assertRefused(writeTemp(modelOf([tensor({ name: 'w', dataType: DataType.FLOAT, dims: deep, raw: le.f32(1) })])), /more than 64 dimensions/);
  });

  test('typed fields that hold too few or too many values', async () => {
    await assertRefused(
      writeTemp(modelOf([tensor({ name: 'w', dataType: DataType.FLOAT, dims: [3], floatData: [1, 2] })])),
      /tensor "w": float_data holds 2 values, but shape \[3\] needs 3/,
    );
    await assertRefused(
      writeTemp(modelOf([tensor({ name: 'w', dataType: DataType.INT32, dims: [3], int32Data: [1, 2] })])),
      /tensor "w": int32_data holds 1 to 2 values, but shape \[3\] needs 3/,
    );
    // Eleven bytes may hold two to eleven varints: only decoding tells, so reading refuses it.
    const file = writeTemp(modelOf([tensor({ name: 'w', dataType: DataType.INT64, dims: [3], int64Data: [-1n, 5n] })]));
    await withCheckpoint(file, async (checkpoint) => {
      await assert.rejects(tensorNamed(checkpoint, 'w').read(), isCheckpointErrorFor(file, /tensor "w": int64_data holds 2 values, but its shape needs 3/));
    });
  });

  test('values given twice, or in a field that cannot hold the type', async () => {
    await assertRefused(
      writeTemp(modelOf([tensor({ name: 'w', dataType: DataType.FLOAT, dims: [1], raw: le.f32(1), floatData: [1] })])),
      /tensor "w": its values are given twice, in raw_data and float_data/,
    );
    await assertRefused(
      writeTemp(modelOf([tensor({ name: 'w', dataType: DataType.INT32, dims: [1], floatData: [1] })])),
      /tensor "w": float_data cannot hold INT32 values/,
    );
    await assertRefused(writeTemp(modelOf([tensor({ name: 'w', dataType: DataType.FLOAT, dims: [2] })])), /tensor "w": holds no values for its 2 elements/);
  });

  test('malformed protobuf: wire types, field numbers, duplicates, missing parts', async () => {
    const valid = tensor({ name: 'w', dataType: DataType.FLOAT, dims: [1], raw: le.f32(1) });
    const cases: [Buffer, RegExp][] = [
      [model({ graph: Buffer.concat([rawKey(9, 7), Buffer.alloc(4)]) }), /field 9 at byte \d+ has invalid wire type 7/],
      [model({ graph: Buffer.concat([rawKey(9, 3), Buffer.alloc(4)]) }), /wire type start group, which ONNX never uses/],
      [model({ graph: Buffer.from([0x02, 0x00]) }), /invalid field number 0/],
      [modelOf([Buffer.concat([valid.subarray(0, 2), bytesField(2, 'x')])]), /TensorProto at byte \d+: field 2 has wire type bytes where varint is expected/],
      [modelOf([valid, valid]), /two initializers are named "w"/],
      [modelOf([tensor({ dataType: DataType.FLOAT, dims: [1], raw: le.f32(1) })]), /initializer #0 has no name/],
      [Buffer.concat([modelOf([valid]), bytesField(7, graph({}))]), /the model holds two graphs/],
      [Buffer.concat([varintField(1, 8), bytesField(2, 'no graph')]), /the model has no graph/],
      [bytesField(7, graph({})), /no ir_version: not an ONNX model/],
      [modelOf([tensor({ name: 'w', dataType: DataType.FLOAT, dims: [1], raw: le.f32(1), dataLocation: 5 })]), /unknown data_location 5/],
      [model({ graph: graph({ nodes: [Buffer.concat([bytesField(4, Buffer.from([0xff, 0xfe]))])] }) }), /NodeProto at byte \d+: field 4 is not valid UTF-8/],
    ];
    for (const [bytes, problem] of cases) await assertRefused(writeTemp(bytes), problem);
  });

  test('a name longer than any real one is refused before it is read', async () => {
    const file = writeTemp(modelOf([tensor({ name: 'n'.repeat(70_000), dataType: DataType.FLOAT, dims: [1], raw: le.f32(1) })]));
    await assertRefused(file, /field 8 holds 70000 bytes, more than the 65536 allowed/);
  });

  test('any damaged byte of a real export ends in a CheckpointError or a valid listing, never a crash', async () => {
    const whole = readFileSync(onnxFixture('cnn.onnx'));
    const file = path.join(temp.dir, 'damaged.onnx');
    let refused = 0;
    // A fixed pseudo-random walk over the file's bytes, and every byte of its first 64.
    const positions = [...Array.from({ length: 64 }, (_, i) => i), ...Array.from({ length: 96 }, (_, i) => (i * 7919 + 13) % whole.length)];
    for (const [index, position] of positions.entries()) {
      const damaged = Buffer.from(whole);
      damaged[position] = damaged[position]! ^ (1 << (index % 8)) ^ 0x80;
      writeFileSync(file, damaged);
      try {
        await withCheckpoint(file, async (checkpoint) => {
          for (const listed of checkpoint.tensors) await listed.read();
        });
      } catch (error) {
        assert.ok(error instanceof CheckpointError, `byte ${position}: ${String(error)}`);
        assert.equal(error.file, file);
        refused++;
      }
    }
    // Most bytes are weight values, where damage is undetectable; damage to the structure is noticed.
    assert.ok(refused > 0, 'no damage was noticed');
  });
});

// ---------------------------------------------------------------------------------------

/** Counts the bytes read through it. */
class CountingSource implements ByteSource {
  bytesRead = 0;
  constructor(private readonly inner: ByteSource) {}
  get name(): string {
    return this.inner.name;
  }
  get size(): number {
    return this.inner.size;
  }
  read(offset: number, length: number): Promise<Buffer> {
    this.bytesRead += length;
    return this.inner.read(offset, length);
  }
  slice(offset: number, length: number, name?: string): ByteSource {
    return this.inner.slice(offset, length, name);
  }
}

describe('large ONNX files', () => {
  test('a 1.5 GB model lists its tensors reading only their headers', async () => {
    const elements = 375_000_000;
    const dataBytes = elements * 4;
    const header = tensor({ name: 'big', dataType: DataType.FLOAT, dims: [elements] });
    const bigTensor = Buffer.concat([header, lengthDelimitedHead(9, dataBytes)]);
    const bigField = lengthDelimitedHead(5, bigTensor.length + dataBytes);
    const after = Buffer.concat([
      bytesField(5, tensor({ name: 'after', dataType: DataType.FLOAT, dims: [2], raw: le.f32(1, 2) })),
      bytesField(12, valueInfo('out', DataType.FLOAT, [1])),
    ]);
    const graphLength = bigField.length + bigTensor.length + dataBytes + after.length;
    const opset = bytesField(8, [bytesField(1, ''), varintField(2, 17)]);
    const start = Buffer.concat([varintField(1, 8), lengthDelimitedHead(7, graphLength), bigField, bigTensor]);
    const file = path.join(temp.dir, 'big.onnx');
    // A sparse file: the 1.5 GB of values are a hole that takes no disk space.
    const handle = openSync(file, 'w');
    try {
      writeSync(handle, start, 0, start.length, 0);
      writeSync(handle, Buffer.concat([after, opset]), 0, after.length + opset.length, start.length + dataBytes);
    } finally {
      closeSync(handle);
    }

    const source = await FileSource.open(file);
    const counting = new CountingSource(source);
    try {
      const big = await readOnnxGraph(counting, file);
      assert.deepEqual([...big.initializers.keys()], ['big', 'after']);
      assert.deepEqual(big.initializers.get('big')?.storage, { kind: 'raw', offset: start.length, length: dataBytes });
      assert.equal(big.opsets.get(''), 17);
      assert.ok(counting.bytesRead < 512 * 1024, `read ${counting.bytesRead} bytes`);
    } finally {
      await source.close();
    }
    await withCheckpoint(file, async (checkpoint) => {
      const listed = tensorNamed(checkpoint, 'big');
      assert.deepEqual(listed.shape, [elements]);
      assert.equal(listed.byteSize, dataBytes);
      assert.deepEqual(Array.from(await listed.read(elements - 2, 2)), [0, 0]);
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'after').read()), [1, 2]);
    });
  });
});
