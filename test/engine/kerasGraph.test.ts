import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { fingerprintFile } from '../../server/src/engine/fingerprint/fingerprint';
import { findParent } from '../../server/src/engine/lineage/parentQuery';
import { CheckpointError } from '../../server/src/engine/errors';
import type { Checkpoint } from '../../server/src/engine/formats/checkpoint';
import type { Tensor } from '../../server/src/engine/formats/tensor';
import { KerasConfigError, readKerasGraph } from '../../server/src/engine/repr/kerasGraph';
import { openKerasFeatureModel } from '../../server/src/engine/repr/kerasFeatureModel';
import { parametersFor } from '../../server/src/engine/repr/parameterMatching';
import { snakeCase } from '../../server/src/engine/repr/kerasWeights';
import { mulberry32 } from '../../server/src/engine/repr/probe';
import { makeTempDir } from '../helpers';
import { weightGroup, writeTfjsModel } from './tfjsWriter';

/** A tensor held in memory, as a reader would list it. */
function memoryTensor(name: string, shape: readonly number[], values: Float64Array): Tensor {
  return {
    name,
    dtype: 'F32',
    shape,
    elementCount: values.length,
    byteSize: values.length * 4,
    read: async (start = 0, count = values.length - start) => values.slice(start, start + count),
    chunks: async function* () {
      yield values;
    },
  };
}

function randomValues(count: number, seed: number): Float64Array {
  const random = mulberry32(seed);
  return Float64Array.from({ length: count }, () => random() - 0.5);
}

function checkpointOf(modelConfig: unknown, tensors: readonly Tensor[], format: Checkpoint['format'] = 'keras'): Checkpoint {
  return { path: '/models/net.keras', format, metadata: {}, tensors, modelConfig, warnings: [], close: async () => {} };
}

/** A Keras 3 config.json layer entry called on the given layers' outputs. */
function keras3Layer(className: string, name: string, config: Record<string, unknown>, inputs: readonly string[]): Record<string, unknown> {
  const tensor = (layer: string) => ({ class_name: '__keras_tensor__', config: { shape: [null], dtype: 'float32', keras_history: [layer, 0, 0] } });
  const args = inputs.length === 1 ? [tensor(inputs[0]!)] : [inputs.map(tensor)];
  return { module: 'keras.layers', class_name: className, config: { name, ...config }, registered_name: null, name, inbound_nodes: inputs.length === 0 ? [] : [{ args, kwargs: {} }] };
}

/** Keras 3: input [4] → dense (3, relu) and dense_1 (3) on it, added, → head dense_2 (2). */
function residualMlp(): { config: unknown; tensors: Tensor[] } {
  const layers = [
    keras3Layer('InputLayer', 'features', { batch_shape: [null, 4] }, []),
    keras3Layer('Dense', 'hidden', { units: 3, activation: 'relu' }, ['features']),
    keras3Layer('Dense', 'skip', { units: 3, activation: { module: 'keras.activations', class_name: 'function', config: 'linear', registered_name: 'function' } }, ['features']),
    keras3Layer('Add', 'sum', {}, ['hidden', 'skip']),
    keras3Layer('Dense', 'head', { units: 2, activation: 'softmax' }, ['sum']),
  ];
  const config = { module: 'keras', class_name: 'Functional', config: { name: 'residual', layers, input_layers: ['features', 0, 0], output_layers: ['head', 0, 0] } };
  // Keras 3 paths: snake_case class names numbered in layer order.
  const tensors = [
    memoryTensor('dense/vars/0', [4, 3], randomValues(12, 1)),
    memoryTensor('dense/vars/1', [3], randomValues(3, 2)),
    memoryTensor('dense_1/vars/0', [4, 3], randomValues(12, 3)),
    memoryTensor('dense_1/vars/1', [3], randomValues(3, 4)),
    memoryTensor('dense_2/vars/0', [3, 2], randomValues(6, 5)),
    memoryTensor('dense_2/vars/1', [2], randomValues(2, 6)),
  ];
  return { config, tensors };
}

/** What the residual MLP computes for one sample, by hand. */
async function residualByHand(tensors: readonly Tensor[], sample: readonly number[]): Promise<number[]> {
  const values = new Map(await Promise.all(tensors.map(async (tensor) => [tensor.name, await tensor.read()] as const)));
  const dense = (prefix: string, relu: boolean) =>
    [0, 1, 2].map((j) => {
      const kernel = values.get(`${prefix}/vars/0`)!;
      const sum = sample.reduce((total, x, i) => total + x * kernel[i * 3 + j]!, values.get(`${prefix}/vars/1`)![j]!);
      return relu ? Math.max(0, sum) : sum;
    });
  const hidden = dense('dense', true);
  const skip = dense('dense_1', false);
  return hidden.map((value, j) => value + skip[j]!);
}

describe('Keras configurations read into one graph', () => {
  test('Keras 3 call arguments, a merge of two inputs, and a single input given as one triple', () => {
    const graph = readKerasGraph(residualMlp().config);
    assert.deepEqual(graph.inputs, [{ layer: 'features', node: 0, tensor: 0 }]);
    assert.deepEqual(graph.inputShapes, [[4]]);
    const sum = graph.layers.find((layer) => layer.name === 'sum')!;
    assert.deepEqual(sum.calls, [[{ layer: 'hidden', node: 0, tensor: 0 }, { layer: 'skip', node: 0, tensor: 0 }]]);
  });

  test('TF.js camelCase keys and a Keras 2 Sequential without an input layer', () => {
    const graph = readKerasGraph({
      className: 'Sequential',
      config: { name: 'chain', layers: [{ className: 'Dense', config: { name: 'd1', units: 3, batchInputShape: [null, 5] } }, { className: 'Dense', config: { name: 'd2', units: 2 } }] },
    });
    assert.deepEqual(graph.inputShapes, [[5]]);
    assert.deepEqual(graph.layers.map((layer) => layer.name), ['chain_input', 'd1', 'd2']);
    assert.deepEqual(graph.layers[2]!.calls, [[{ layer: 'd1', node: 0, tensor: 0 }]]);
    assert.deepEqual(graph.outputs, [{ layer: 'd2', node: 0, tensor: 0 }]);
  });

  test('a reference to a layer the model does not list, and a model nested without end', () => {
    const { config } = residualMlp() as { config: { config: { output_layers: unknown } } };
    config.config.output_layers = [['nowhere', 0, 0]];
    assert.throws(() => readKerasGraph(config), (error: Error) => error instanceof KerasConfigError && /"nowhere"/.test(error.message));
    let nested: unknown = { class_name: 'Sequential', config: { layers: [{ class_name: 'Dense', config: { name: 'd', units: 1, batch_input_shape: [null, 1] } }] } };
    for (let depth = 0; depth < 40; depth++) nested = { class_name: 'Sequential', config: { name: `s${depth}`, layers: [{ ...(nested as object), config: { ...(nested as { config: object }).config, name: `m${depth}`, batch_input_shape: [null, 1] } }] } };
    assert.throws(() => readKerasGraph(nested), /nest deeper than/);
  });

  test("class names become Keras 3's weight paths as Keras's to_snake_case makes them", () => {
    assert.deepEqual(
      ['Dense', 'Conv2D', 'DepthwiseConv2D', 'SeparableConv2D', 'BatchNormalization', 'LayerNormalization', 'PReLU', 'Functional'].map(snakeCase),
      ['dense', 'conv2d', 'depthwise_conv2d', 'separable_conv2d', 'batch_normalization', 'layer_normalization', 'p_re_lu', 'functional'],
    );
  });
});

describe('Keras models run from their configuration', () => {
  test('features are the head\'s input, computed as by hand, with numbered Keras 3 weights', async () => {
    const { config, tensors } = residualMlp();
    const checkpoint = checkpointOf(config, tensors);
    const model = (await openKerasFeatureModel(checkpoint))!;
    assert.deepEqual(model.inputShape, [4]);
    assert.deepEqual([...model.parameters.keys()], ['dense/vars/0', 'dense/vars/1', 'dense_1/vars/0', 'dense_1/vars/1'], 'the head is not a parameter of the features');
    const probe = Float32Array.from([0.5, -1, 2, 0.25, 1, 1, -1, 0]);
    const features = await model.features(probe, 2, await parametersFor(checkpoint, model));
    assert.equal(features.columns, 3);
    for (let row = 0; row < 2; row++) {
      const expected = await residualByHand(tensors, [...probe.subarray(row * 4, row * 4 + 4)]);
      expected.forEach((value, j) => assert.ok(Math.abs(features.values[row * 3 + j]! - value) < 1e-5, `row ${row} column ${j}: ${features.values[row * 3 + j]} vs ${value}`));
    }
  });

  test('a candidate saved under other layer names is matched layer by layer', async () => {
    const { config, tensors } = residualMlp();
    const model = (await openKerasFeatureModel(checkpointOf(config, tensors)))!;
    // The same network from another session: other layer names, Keras 2 weight names.
    const candidateConfig = JSON.parse(JSON.stringify(config).replace(/"(hidden|skip|sum|head)"/g, '"$1_2"')) as unknown;
    const candidateTensors = ['hidden_2', 'skip_2', 'head_2'].flatMap((layer, i) => {
      const [inputs, outputs] = layer === 'head_2' ? [3, 2] : [4, 3];
      return [memoryTensor(`${layer}/kernel:0`, [inputs, outputs], new Float64Array(inputs * outputs).fill(i + 1)), memoryTensor(`${layer}/bias:0`, [outputs], new Float64Array(outputs).fill(-(i + 1)))];
    });
    const values = await parametersFor(checkpointOf(candidateConfig, candidateTensors), model);
    assert.deepEqual(
      [...values].map(([name, value]) => [name, value[0]]),
      [['dense/vars/0', 1], ['dense/vars/1', -1], ['dense_1/vars/0', 2], ['dense_1/vars/1', -2]],
    );
  });

  test('unsupported layers, missing weights, misshapen kernels and cycles are named, not run', async () => {
    const { config, tensors } = residualMlp();
    const withLayer = (change: (layers: Record<string, unknown>[]) => void) => {
      const copy = JSON.parse(JSON.stringify(config)) as { config: { layers: Record<string, unknown>[] } };
      change(copy.config.layers);
      return copy;
    };
    const rejects = async (modelConfig: unknown, layerTensors: readonly Tensor[], pattern: RegExp) => {
      await assert.rejects(openKerasFeatureModel(checkpointOf(modelConfig, layerTensors)), (error: Error) => {
        assert.ok(error instanceof CheckpointError, error.message);
        assert.match(error.message, /^\/models\/net\.keras: only weight-space methods apply/);
        assert.match(error.message, pattern);
        return true;
      });
    };
    await rejects(withLayer((layers) => (layers[1]!.class_name = 'Lambda')), tensors, /layer "hidden" \(Lambda\) is not a layer this tool runs/);
    await rejects(config, tensors.filter((tensor) => !tensor.name.startsWith('dense_1/')), /weights of layer "skip" \(Dense: kernel, bias\) are not in the file/);
    const wide = tensors.map((tensor) => (tensor.name === 'dense/vars/0' ? memoryTensor(tensor.name, [4, 5], randomValues(20, 9)) : tensor));
    await rejects(config, wide, /tensor dense\/vars\/0 has shape \[4, 5\], but layer "hidden" \(Dense\) needs \[inputs, 3\]/);
    const cycle = withLayer((layers) => {
      (layers[1]!.inbound_nodes as { args: { config: { keras_history: unknown[] } }[] }[])[0]!.args[0]!.config.keras_history = ['sum', 0, 0];
    });
    await rejects(cycle, tensors, /depends on its own output/);
    await rejects(withLayer((layers) => ((layers[1]!.config as Record<string, unknown>).activation = 'hard_silu_of_my_own')), tensors, /activation "hard_silu_of_my_own"/);
  });

  test('a file without a saved configuration has no Keras model', async () => {
    assert.equal(await openKerasFeatureModel(checkpointOf(undefined, residualMlp().tensors)), undefined);
  });
});

describe('a candidate whose features are not finite', () => {
  test('is left out with the reason, and the others are still ranked by the detector and by l1', async () => {
    const temp = makeTempDir('keras-not-finite-');
    try {
      const { config, tensors } = residualMlp();
      /** The residual MLP as a TF.js model.json under `name`, its weights changed by `change`. */
      const write = async (name: string, change: (value: number, i: number) => number) => {
        const dir = path.join(temp.dir, name);
        mkdirSync(dir);
        const weights = await Promise.all(
          tensors.map(async (tensor) => ({ name: tensor.name, shape: tensor.shape, dtype: 'float32' as const, data: Buffer.from(Float32Array.from(await tensor.read(), change).buffer) })),
        );
        return fingerprintFile(writeTfjsModel(dir, { groups: [weightGroup(weights, 1 << 20)], fields: { format: 'layers-model', modelTopology: config } }));
      };
      const parent = await write('parent', (value) => value);
      const child = await write('child', (value, i) => value + 0.01 * Math.sin(i));
      const unrelated = await write('unrelated', (value, i) => Math.cos(7 * i));
      // Weights near float32's largest value overflow to infinity in the first layer.
      const overflowing = await write('overflowing', () => 3e38);
      for (const method of ['detector', 'repr-l1'] as const) {
        const answer = await findParent(child, [overflowing, unrelated, parent], { method });
        assert.equal(answer.parent, parent.path, method);
        assert.match(answer.details, /overflowing\/model\.json left out: its features on the probe are not all finite numbers/, method);
        for (const entry of answer.ranking) assert.ok(Number.isFinite(entry.probability), `${method}: ${entry.candidate} has probability ${entry.probability}`);
        assert.equal(answer.ranking.find((entry) => entry.candidate === overflowing.path)!.related, false, method);
      }
    } finally {
      temp.cleanup();
    }
  });
});
