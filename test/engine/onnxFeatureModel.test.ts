import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CancelledError, CheckpointError } from '../../server/src/engine/errors';
import { decodeToFloat64 } from '../../server/src/engine/formats/dtype';
import { npyReader, npzReader } from '../../server/src/engine/formats/numpy';
import { onnxReader, readOnnxGraph } from '../../server/src/engine/formats/onnx';
import { FileSource } from '../../server/src/engine/io/byteSource';
import type { FeatureMatrix, FeatureModel } from '../../server/src/engine/repr/featureModel';
import { openOnnxFeatureModel, toHalfBits, type OnnxFeatureModelOptions } from '../../server/src/engine/repr/onnxFeatureModel';
import { fixturePath, makeTempDir } from '../helpers';
import { tensorNamed, usingCheckpoint } from './checkpointTesting';
import { DataType, graph, intAttribute, le, model, node, tensor, valueInfo } from './onnxWriter';

const TOLERANCE = 1e-4;
const PROBE_ROWS = 8;
const onnxFixture = (name: string): string => fixturePath('onnx', name);

let temp: { dir: string; cleanup: () => void };
let probe: Float32Array;
const pytorchFeatures = new Map<string, Float64Array>();

before(async () => {
  temp = makeTempDir('onnx-feature-test-');
  probe = await usingCheckpoint(npyReader.open(onnxFixture('probe.npy')), async (checkpoint) => Float32Array.from(await checkpoint.tensors[0]!.read()));
  await usingCheckpoint(npzReader.open(onnxFixture('features.npz')), async (checkpoint) => {
    for (const features of checkpoint.tensors) pytorchFeatures.set(features.name, await features.read());
  });
});
after(() => temp.cleanup());

let fileCounter = 0;
function writeTemp(contents: Buffer, name = `model${++fileCounter}.onnx`): string {
  const file = path.join(temp.dir, name);
  writeFileSync(file, contents);
  return file;
}

async function withFeatureModel<T>(file: string, options: OnnxFeatureModelOptions, use: (featureModel: FeatureModel) => Promise<T>): Promise<T> {
  const featureModel = await openOnnxFeatureModel(file, options);
  try {
    return await use(featureModel);
  } finally {
    await featureModel.dispose();
  }
}

/** The values of `names` as stored in a checkpoint (an ONNX model or an npz state dict). */
async function parametersFrom(file: string, names: Iterable<string>): Promise<Map<string, Float32Array>> {
  const reader = file.endsWith('.npz') ? npzReader : onnxReader;
  return usingCheckpoint(reader.open(file), async (checkpoint) => {
    const values = new Map<string, Float32Array>();
    for (const name of names) values.set(name, Float32Array.from(await tensorNamed(checkpoint, name).read()));
    return values;
  });
}

function maxDifference(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  assert.equal(actual.length, expected.length, 'same number of values');
  let largest = 0;
  for (let i = 0; i < expected.length; i++) largest = Math.max(largest, Math.abs(actual[i]! - expected[i]!));
  return largest;
}

function assertFeatures(actual: FeatureMatrix, expected: ArrayLike<number>, rows: number, columns: number, what: string): void {
  assert.equal(actual.rows, rows, `${what}: rows`);
  assert.equal(actual.columns, columns, `${what}: columns`);
  const difference = maxDifference(actual.values, expected);
  assert.ok(difference <= TOLERANCE, `${what}: features differ by up to ${difference}`);
}

function pytorch(name: string): Float64Array {
  const features = pytorchFeatures.get(name);
  assert.ok(features, `features.npz holds ${name}`);
  return features;
}

// ---------------------------------------------------------------------------------------

describe('ONNX feature models on PyTorch exports', () => {
  test('MLP: the features are the input of the head, as PyTorch computes it', async () => {
    await withFeatureModel(onnxFixture('mlp.onnx'), { device: 'cpu' }, async (mlp) => {
      assert.equal(mlp.device, 'onnxruntime cpu');
      assert.deepEqual(mlp.inputShape, [784]);
      assert.deepEqual(
        [...mlp.parameters],
        [
          ['fc1.weight', [32, 784]],
          ['fc1.bias', [32]],
          ['fc2.weight', [16, 32]],
          ['fc2.bias', [16]],
        ],
      );
      assert.match(mlp.description, /^ONNX graph, features from \S+/);
      const own = await parametersFrom(onnxFixture('mlp.onnx'), mlp.parameters.keys());
      assertFeatures(await mlp.features(probe, PROBE_ROWS, own), pytorch('mlp'), PROBE_ROWS, 16, 'mlp');
      // The two models' features are far apart, so matching one is not matching both.
      assert.ok(maxDifference(pytorch('mlp'), pytorch('mlp_b')) > 100 * TOLERANCE);
    });
  });

  test("MLP: the second model's weights give the second model's features, and back", async () => {
    await withFeatureModel(onnxFixture('mlp.onnx'), { device: 'cpu' }, async (mlp) => {
      const second = await parametersFrom(onnxFixture('mlp_b.npz'), mlp.parameters.keys());
      const own = await parametersFrom(onnxFixture('mlp.onnx'), mlp.parameters.keys());
      assertFeatures(await mlp.features(probe, PROBE_ROWS, second), pytorch('mlp_b'), PROBE_ROWS, 16, 'mlp with mlp_b weights');
      assertFeatures(await mlp.features(probe, PROBE_ROWS, own), pytorch('mlp'), PROBE_ROWS, 16, 'mlp with its own weights again');
    });
  });

  test('CNN with batch norms folded into its convolutions, under its own and another CNN\'s weights', async () => {
    await withFeatureModel(onnxFixture('cnn.onnx'), { device: 'cpu' }, async (cnn) => {
      assert.deepEqual(cnn.inputShape, [1, 28, 28]);
      assert.deepEqual([...cnn.parameters.keys()].sort(), ['fc.bias', 'fc.weight', 'onnx::Conv_32', 'onnx::Conv_33', 'onnx::Conv_35', 'onnx::Conv_36']);
      const own = await parametersFrom(onnxFixture('cnn.onnx'), cnn.parameters.keys());
      const second = await parametersFrom(onnxFixture('cnn_b.onnx'), cnn.parameters.keys());
      assertFeatures(await cnn.features(probe, PROBE_ROWS, own), pytorch('cnn'), PROBE_ROWS, 16, 'cnn');
      assertFeatures(await cnn.features(probe, PROBE_ROWS, second), pytorch('cnn_b'), PROBE_ROWS, 16, 'cnn with cnn_b weights');
    });
  });

  test('keep_initializers_as_inputs and a batch fixed at 1: run row by row, same features', async () => {
    await withFeatureModel(onnxFixture('cnn_inputs.onnx'), { device: 'cpu' }, async (cnn) => {
      assert.deepEqual(cnn.inputShape, [1, 28, 28]);
      const second = await parametersFrom(onnxFixture('cnn_b.onnx'), cnn.parameters.keys());
      assert.equal(second.size, 6);
      assertFeatures(await cnn.features(probe, PROBE_ROWS, second), pytorch('cnn_b'), PROBE_ROWS, 16, 'cnn_inputs with cnn_b weights');
    });
  });

  test('more rows than one batch, and no rows', async () => {
    await withFeatureModel(onnxFixture('mlp.onnx'), { device: 'cpu' }, async (mlp) => {
      const own = await parametersFrom(onnxFixture('mlp.onnx'), mlp.parameters.keys());
      const repeats = 9;
      const long = new Float32Array(probe.length * repeats);
      const expected = new Float64Array(pytorch('mlp').length * repeats);
      for (let r = 0; r < repeats; r++) {
        long.set(probe, r * probe.length);
        expected.set(pytorch('mlp'), r * pytorch('mlp').length);
      }
      assertFeatures(await mlp.features(long, PROBE_ROWS * repeats, own), expected, PROBE_ROWS * repeats, 16, '72 rows');
      const none = await mlp.features(new Float32Array(0), 0, own);
      assert.equal(none.rows, 0);
      assert.equal(none.values.length, 0);
    });
  });

  test('a named feature tensor: the first hidden layer, computed from the weights here', async () => {
    const file = onnxFixture('mlp.onnx');
    const source = await FileSource.open(file);
    const firstRelu = await readOnnxGraph(source, file).finally(() => source.close());
    const hidden = firstRelu.nodes.find((entry) => entry.opType === 'Relu')!.outputs[0]!;
    await withFeatureModel(file, { device: 'cpu', featureTensor: hidden }, async (mlp) => {
      assert.deepEqual([...mlp.parameters.keys()], ['fc1.weight', 'fc1.bias']);
      assert.equal(mlp.description, `ONNX graph, features from ${hidden}`);
      const weights = await parametersFrom(file, mlp.parameters.keys());
      const w = weights.get('fc1.weight')!;
      const b = weights.get('fc1.bias')!;
      const expected = new Float64Array(PROBE_ROWS * 32);
      for (let row = 0; row < PROBE_ROWS; row++) {
        for (let unit = 0; unit < 32; unit++) {
          let sum = b[unit]!;
          for (let k = 0; k < 784; k++) sum += w[unit * 784 + k]! * probe[row * 784 + k]!;
          expected[row * 32 + unit] = Math.max(0, sum);
        }
      }
      assertFeatures(await mlp.features(probe, PROBE_ROWS, weights), expected, PROBE_ROWS, 32, 'first hidden layer');
    });
  });

  test('device auto falls back to a provider that starts here', async () => {
    await withFeatureModel(onnxFixture('cnn.onnx'), { device: 'auto' }, async (cnn) => {
      assert.match(cnn.device, /^onnxruntime (cuda|webgpu|cpu)$/);
      const own = await parametersFrom(onnxFixture('cnn.onnx'), cnn.parameters.keys());
      assertFeatures(await cnn.features(probe, PROBE_ROWS, own), pytorch('cnn'), PROBE_ROWS, 16, `cnn on ${cnn.device}`);
    });
  });
});

// ---------------------------------------------------------------------------------------

/** x[n, 4] → relu(x·W1 + b1) → ·W2 + b2: a MatMul(+Add) head, its features the hidden layer. */
const W1 = [0.5, -1, 0.25, 2, 1.5, 0, -0.5, 1, -2, 0.75, 1, -1.25];
const B1 = [0.1, -0.2, 0.3];
const W2 = [1, -1, 0.5, 2, -0.5, 1];
const B2 = [0.25, -0.25];
const X = [1, 2, -1, 0.5, 0, -3, 2, 1];

function hiddenLayer(x: readonly number[], w1: readonly number[], b1: readonly number[]): number[] {
  const out: number[] = [];
  for (let row = 0; row < x.length / 4; row++) {
    for (let unit = 0; unit < 3; unit++) {
      let sum = b1[unit]!;
      for (let k = 0; k < 4; k++) sum += x[row * 4 + k]! * w1[k * 3 + unit]!;
      out.push(Math.max(0, sum));
    }
  }
  return out;
}

function smallMlp(initializers: Buffer[]): Buffer {
  return model({
    graph: graph({
      nodes: [
        node({ opType: 'MatMul', inputs: ['x', 'W1'], outputs: ['xw'] }),
        node({ opType: 'Add', inputs: ['xw', 'b1'], outputs: ['pre'] }),
        node({ opType: 'Relu', inputs: ['pre'], outputs: ['hidden'] }),
        node({ opType: 'MatMul', inputs: ['hidden', 'W2'], outputs: ['hw'] }),
        node({ opType: 'Add', inputs: ['hw', 'b2'], outputs: ['logits'] }),
      ],
      initializers,
      inputs: [valueInfo('x', DataType.FLOAT, ['n', 4])],
      outputs: [valueInfo('logits', DataType.FLOAT, ['n', 2])],
    }),
  });
}

describe('ONNX feature models on written graphs', () => {
  test('external data and typed fields run like raw_data; the MatMul+Add head is found', async () => {
    const inline = writeTemp(
      smallMlp([
        tensor({ name: 'W1', dataType: DataType.FLOAT, dims: [4, 3], raw: le.f32(...W1) }),
        tensor({ name: 'b1', dataType: DataType.FLOAT, dims: [3], floatData: B1 }),
        tensor({ name: 'W2', dataType: DataType.FLOAT, dims: [3, 2], raw: le.f32(...W2) }),
        tensor({ name: 'b2', dataType: DataType.FLOAT, dims: [2], floatData: B2, packed: false }),
      ]),
    );
    writeTemp(Buffer.concat([le.f32(...W1), le.f32(...B1), le.f32(...W2), le.f32(...B2)]), 'weights.bin');
    const external = (name: string, dims: number[], offset: number): Buffer =>
      tensor({ name, dataType: DataType.FLOAT, dims, external: [['location', 'weights.bin'], ['offset', String(offset)]] });
    const externalFile = writeTemp(smallMlp([external('W1', [4, 3], 0), external('b1', [3], 48), external('W2', [3, 2], 60), external('b2', [2], 84)]));

    const weights = new Map([
      ['W1', Float32Array.from(W1)],
      ['b1', Float32Array.from(B1)],
    ]);
    const expected = hiddenLayer(Array.from(Float32Array.from(X)), Array.from(weights.get('W1')!), Array.from(weights.get('b1')!));
    for (const file of [inline, externalFile]) {
      await withFeatureModel(file, { device: 'cpu' }, async (small) => {
        assert.deepEqual(
          [...small.parameters],
          [
            ['W1', [4, 3]],
            ['b1', [3]],
          ],
        );
        assert.equal(small.description, 'ONNX graph, features from hidden');
        assertFeatures(await small.features(Float32Array.from(X), 2, weights), expected, 2, 3, path.basename(file));
      });
    }
  });

  test('float16 and float64 parameters are fed in their own types', async () => {
    // x → cast to f16 → ·W (f16) → cast to f64 → ·S (f64, elementwise) → cast to f32 → relu → Gemm head.
    // Every value is a small dyadic number, exact in float16, so the expected features are exact.
    const file = writeTemp(
      model({
        graph: graph({
          nodes: [
            node({ opType: 'Cast', inputs: ['x'], outputs: ['x16'], attributes: [intAttribute('to', DataType.FLOAT16)] }),
            node({ opType: 'MatMul', inputs: ['x16', 'W'], outputs: ['y16'] }),
            node({ opType: 'Cast', inputs: ['y16'], outputs: ['y64'], attributes: [intAttribute('to', DataType.DOUBLE)] }),
            node({ opType: 'Mul', inputs: ['y64', 'S'], outputs: ['z64'] }),
            node({ opType: 'Cast', inputs: ['z64'], outputs: ['z'], attributes: [intAttribute('to', DataType.FLOAT)] }),
            node({ opType: 'Relu', inputs: ['z'], outputs: ['features'] }),
            node({ opType: 'Gemm', inputs: ['features', 'H'], outputs: ['logits'] }),
          ],
          initializers: [
            tensor({ name: 'W', dataType: DataType.FLOAT16, dims: [2, 2], raw: Buffer.from(toHalfBits(Float32Array.of(1, 0, 0, 1)).buffer) }),
            tensor({ name: 'S', dataType: DataType.DOUBLE, dims: [2], raw: le.f64(1, 1) }),
            tensor({ name: 'H', dataType: DataType.FLOAT, dims: [2, 1], raw: le.f32(1, 1) }),
          ],
          inputs: [valueInfo('x', DataType.FLOAT, ['n', 2])],
          outputs: [valueInfo('logits', DataType.FLOAT, ['n', 1])],
        }),
      }),
    );
    await withFeatureModel(file, { device: 'cpu' }, async (mixed) => {
      assert.deepEqual([...mixed.parameters.keys()], ['W', 'S']);
      const parameters = new Map([
        ['W', Float32Array.of(0.5, -2, 1.5, 4)],
        ['S', Float32Array.of(3, 0.25)],
      ]);
      // [1, 2]·W = [3.5, 6], times S = [10.5, 1.5]; [-1, 0.5]·W = [0.25, 4] → [0.75, 1].
      const result = await mixed.features(Float32Array.of(1, 2, -1, 0.5), 2, parameters);
      assert.deepEqual(Array.from(result.values), [10.5, 1.5, 0.75, 1]);
    });
  });

  test('float32 → float16 conversion: every half value round-trips, ties go to even, overflow to infinity', () => {
    const codes = new Uint16Array(65536).map((_, code) => code);
    const values = Float32Array.from(decodeToFloat64('F16', new Uint8Array(codes.buffer)));
    const back = toHalfBits(values);
    for (let code = 0; code < 65536; code++) {
      const exponent = (code >> 10) & 0x1f;
      if (exponent === 0x1f && (code & 0x3ff) !== 0) assert.equal(back[code]! & 0x7e00, 0x7e00, `NaN ${code} stays NaN`);
      else assert.equal(back[code], code, `half ${code.toString(16)}`);
    }
    // Midway between 1 (0x3c00) and the next half (0x3c01) goes to the even 0x3c00; between 0x3c01 and 0x3c02 to 0x3c02.
    const ulp = 2 ** -10;
    assert.deepEqual(Array.from(toHalfBits(Float32Array.of(1 + ulp / 2, 1 + 1.5 * ulp, 1 + ulp / 2 + 2 ** -20))), [0x3c00, 0x3c02, 0x3c01]);
    // Subnormals: half the smallest subnormal ties to zero, a little more rounds up to it.
    assert.deepEqual(Array.from(toHalfBits(Float32Array.of(2 ** -25, 2 ** -25 + 2 ** -35, -(2 ** -26)))), [0x0000, 0x0001, 0x8000]);
    // 65520 is midway between the largest half (65504) and 65536, which overflows.
    assert.deepEqual(Array.from(toHalfBits(Float32Array.of(65519, 65520, -1e6))), [0x7bff, 0x7c00, 0xfc00]);
  });
});

// ---------------------------------------------------------------------------------------

describe('ONNX feature model errors', () => {
  const assertCheckpointError = (file: string, problem: RegExp) => (error: unknown) => {
    assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${String(error)}`);
    assert.equal(error.file, file);
    assert.match(error.problem, problem);
    return true;
  };

  test('a graph without a Gemm or MatMul head needs the feature tensor named', async () => {
    const file = writeTemp(
      model({
        graph: graph({
          nodes: [node({ opType: 'Relu', inputs: ['x'], outputs: ['y'] })],
          inputs: [valueInfo('x', DataType.FLOAT, ['n', 3])],
          outputs: [valueInfo('y', DataType.FLOAT, ['n', 3])],
        }),
      }),
    );
    await assert.rejects(openOnnxFeatureModel(file, { device: 'cpu' }), assertCheckpointError(file, /no Gemm or MatMul task head found before output "y"; name the feature tensor/));
    await withFeatureModel(file, { device: 'cpu', featureTensor: 'y' }, async (relu) => {
      assert.equal(relu.parameters.size, 0);
      const result = await relu.features(Float32Array.of(-1, 0, 2), 1, new Map());
      assert.deepEqual(Array.from(result.values), [0, 0, 2]);
    });
  });

  test('unknown feature tensors, several data inputs, free sample dimensions and damaged files are refused', async () => {
    const mlp = onnxFixture('mlp.onnx');
    await assert.rejects(openOnnxFeatureModel(mlp, { device: 'cpu', featureTensor: 'nope' }), assertCheckpointError(mlp, /no node produces the feature tensor "nope"/));
    const twoInputs = writeTemp(
      model({
        graph: graph({
          nodes: [node({ opType: 'Add', inputs: ['a', 'b'], outputs: ['c'] })],
          inputs: [valueInfo('a', DataType.FLOAT, ['n', 2]), valueInfo('b', DataType.FLOAT, ['n', 2])],
          outputs: [valueInfo('c', DataType.FLOAT, ['n', 2])],
        }),
      }),
    );
    await assert.rejects(openOnnxFeatureModel(twoInputs, { featureTensor: 'c' }), assertCheckpointError(twoInputs, /needs one data input, but the graph has 2 \(a, b\)/));
    const freeWidth = writeTemp(
      model({
        graph: graph({
          nodes: [node({ opType: 'Relu', inputs: ['x'], outputs: ['y'] })],
          inputs: [valueInfo('x', DataType.FLOAT, ['n', 'width'])],
          outputs: [valueInfo('y', DataType.FLOAT, ['n', 'width'])],
        }),
      }),
    );
    await assert.rejects(openOnnxFeatureModel(freeWidth, { featureTensor: 'y' }), assertCheckpointError(freeWidth, /has a free dimension 1 \(width\)/));
    const truncated = writeTemp(readFileSync(mlp).subarray(0, 5000));
    await assert.rejects(openOnnxFeatureModel(truncated), assertCheckpointError(truncated, /truncated or corrupt/));
  });

  test('missing or misshapen parameters, a probe of the wrong size and a cancelled run', async () => {
    await withFeatureModel(onnxFixture('mlp.onnx'), { device: 'cpu' }, async (mlp) => {
      const own = await parametersFrom(onnxFixture('mlp.onnx'), mlp.parameters.keys());
      const missing = new Map(own);
      missing.delete('fc2.bias');
      await assert.rejects(mlp.features(probe, PROBE_ROWS, missing), /no values given for parameter "fc2.bias"/);
      const short = new Map(own).set('fc1.weight', new Float32Array(10));
      await assert.rejects(mlp.features(probe, PROBE_ROWS, short), /parameter "fc1.weight" needs 25088 values for shape \[32, 784\], got 10/);
      await assert.rejects(mlp.features(probe, PROBE_ROWS + 1, own), /the probe holds 6272 values, not 9 rows of 784/);
      const controller = new AbortController();
      controller.abort();
      await assert.rejects(mlp.features(probe, PROBE_ROWS, own, controller.signal), CancelledError);
    });
  });
});
