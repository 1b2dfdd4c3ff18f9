/**
 * The Keras executor (kerasFeatureModel.ts) against TensorFlow.js's own layers API: genuine
 * models built by tfjs-layers (kerasReference.ts), saved as TF.js model.json and written as the
 * same models' Keras 2 .h5 and Keras 3 .keras files (write_keras_models.py), must give the
 * features tfjs-layers computes at the head's input; files it cannot run must say why; and
 * fine-tuned children trained by tfjs-layers must find their base through findParent.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type * as tfl from '@tensorflow/tfjs-layers';
import { fingerprintFile, type Fingerprint } from '../../server/src/engine/fingerprint/fingerprint';
import type { Checkpoint } from '../../server/src/engine/formats/checkpoint';
import { openCheckpoint } from '../../server/src/engine/formats/index';
import { findParent } from '../../server/src/engine/lineage/parentQuery';
import type { ParentMethod } from '../../server/src/engine/lineage/methods';
import type { FeatureMatrix, FeatureModel } from '../../server/src/engine/repr/featureModel';
import { openKerasFeatureModel } from '../../server/src/engine/repr/kerasFeatureModel';
import { loadParameters } from '../../server/src/engine/repr/stateDictModel';
import { fixturePath, makeTempDir } from '../helpers';
import { usingCheckpoint } from './checkpointTesting';
import {
  ARCHITECTURES,
  lineageModels,
  loadTfjsModel,
  onCpu,
  referenceFeatures,
  referenceProbe,
  saveTfjsModel,
  sameTopology,
  seedWeights,
  writeKerasFiles,
  type ArchitectureName,
  type Lineage,
  type ReferenceArchitecture,
} from './kerasReference';

const TOLERANCE = 1e-4;
const PROBE_ROWS = 6;
const PROBE_SEED = 7;

type FormatKey = 'tfjs' | 'h5' | 'keras';
const FORMATS: readonly { key: FormatKey; label: string }[] = [
  { key: 'tfjs', label: 'TF.js model.json' },
  { key: 'h5', label: 'Keras 2 .h5' },
  { key: 'keras', label: 'Keras 3 .keras' },
];

/** One model saved in every format. */
type SavedModel = Readonly<Record<FormatKey, string>>;

interface Reference {
  readonly architecture: ReferenceArchitecture;
  readonly probe: Float32Array;
  /** The model with seed-1 weights, and a twin of the same topology with seed-2 weights. */
  readonly own: SavedModel;
  readonly twin: SavedModel;
  readonly ownFeatures: Float32Array;
  readonly twinFeatures: Float32Array;
  /** What tfjs-layers computes for the model loaded back from its saved model.json. */
  readonly reloadedFeatures: Float32Array;
}

let temp: { dir: string; cleanup: () => void };
const references = new Map<ArchitectureName, Reference>();

async function saveEverywhere(model: tfl.LayersModel, dir: string): Promise<SavedModel> {
  const tfjs = await saveTfjsModel(model, dir);
  const saved = { tfjs, h5: path.join(dir, 'model.h5'), keras: path.join(dir, 'model.keras') };
  writeKerasFiles(tfjs, { h5: saved.h5, keras: saved.keras });
  return saved;
}

before(async () => {
  temp = makeTempDir('keras-feature-test-');
  for (const architecture of ARCHITECTURES) {
    const dir = path.join(temp.dir, architecture.name);
    const model = await onCpu(() => architecture.build());
    const twin = await onCpu(() => sameTopology(model));
    await onCpu(() => {
      seedWeights(model, 1);
      seedWeights(twin, 2);
    });
    const probe = referenceProbe(architecture.inputShape, PROBE_ROWS, PROBE_SEED);
    const own = await saveEverywhere(model, path.join(dir, 'own'));
    references.set(architecture.name, {
      architecture,
      probe,
      own,
      twin: await saveEverywhere(twin, path.join(dir, 'twin')),
      ownFeatures: await referenceFeatures(model, probe, PROBE_ROWS, architecture.inputShape),
      twinFeatures: await referenceFeatures(twin, probe, PROBE_ROWS, architecture.inputShape),
      reloadedFeatures: await referenceFeatures(await loadTfjsModel(own.tfjs), probe, PROBE_ROWS, architecture.inputShape),
    });
  }
});
after(() => temp?.cleanup());

function reference(name: ArchitectureName): Reference {
  const found = references.get(name);
  assert.ok(found, `the ${name} reference was built`);
  return found;
}

async function withKerasModel<T>(checkpoint: Checkpoint, use: (model: FeatureModel) => Promise<T>): Promise<T> {
  const model = await openKerasFeatureModel(checkpoint, { device: 'cpu' });
  assert.ok(model, `${checkpoint.path}: its saved configuration gives a feature model`);
  try {
    return await use(model);
  } finally {
    await model.dispose();
  }
}

function maxDifference(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  assert.equal(actual.length, expected.length, 'same number of values');
  let largest = 0;
  for (let i = 0; i < expected.length; i++) largest = Math.max(largest, Math.abs(actual[i]! - expected[i]!));
  return largest;
}

function largestMagnitude(values: ArrayLike<number>): number {
  let largest = 0;
  for (let i = 0; i < values.length; i++) largest = Math.max(largest, Math.abs(values[i]!));
  return largest;
}

function assertFeatures(actual: FeatureMatrix, expected: Float32Array, columns: number, what: string): void {
  assert.equal(actual.rows, PROBE_ROWS, `${what}: rows`);
  assert.equal(actual.columns, columns, `${what}: columns`);
  const difference = maxDifference(actual.values, expected);
  assert.ok(difference <= TOLERANCE, `${what}: features differ from tfjs-layers' by up to ${difference}`);
}

// ---------------------------------------------------------------------------------------

describe("Keras and TF.js models run from their saved configuration give tfjs-layers' features", () => {
  test('the references: of order 1, the twins far apart, and the saved TF.js files load back into tfjs-layers as the same models', () => {
    assert.equal(references.size, ARCHITECTURES.length);
    for (const { architecture, ownFeatures, twinFeatures, reloadedFeatures } of references.values()) {
      const scale = largestMagnitude(ownFeatures);
      assert.ok(scale > 0.5 && scale < 50, `${architecture.name}: features of order 1 (largest ${scale})`);
      assert.ok(maxDifference(ownFeatures, twinFeatures) > 1000 * TOLERANCE, `${architecture.name}: the twin's features are far from the model's`);
      assert.equal(maxDifference(reloadedFeatures, ownFeatures), 0, `${architecture.name}: tfjs-layers reads its own file back`);
    }
  });

  for (const architecture of ARCHITECTURES) {
    for (const format of FORMATS) {
      test(`${architecture.name} as ${format.label}`, async () => {
        const { probe, own, twin, ownFeatures, twinFeatures } = reference(architecture.name);
        await usingCheckpoint(openCheckpoint(own[format.key]), (checkpoint) =>
          withKerasModel(checkpoint, async (model) => {
            assert.deepEqual(model.inputShape, architecture.inputShape, 'the input shape, channels-first');
            // The features depend on every stored tensor but the head's kernel and bias, under their stored names and shapes.
            const headShapes = new Set([`${architecture.featureWidth},${architecture.classes}`, `${architecture.classes}`]);
            const expected = checkpoint.tensors.filter((tensor) => !headShapes.has(tensor.shape.join()));
            assert.equal(expected.length, checkpoint.tensors.length - 2, 'the head is one kernel and one bias');
            assert.deepEqual(
              new Map([...model.parameters].map(([name, shape]) => [name, [...shape]])),
              new Map(expected.map((tensor) => [tensor.name, [...tensor.shape]])),
            );
            const values = await loadParameters(checkpoint, model);
            assertFeatures(await model.features(probe, PROBE_ROWS, values), ownFeatures, architecture.featureWidth, 'own weights');
            const twinValues = await usingCheckpoint(openCheckpoint(twin[format.key]), (twinCheckpoint) => loadParameters(twinCheckpoint, model));
            assertFeatures(await model.features(probe, PROBE_ROWS, twinValues), twinFeatures, architecture.featureWidth, "the twin's weights");
          }),
        );
      });
    }
  }
});

// ---------------------------------------------------------------------------------------

/** A copy of the CNN's TF.js files with its topology edited, written in all three formats. */
function damagedCnn(name: string, edit: (layers: Record<string, unknown>[]) => void): SavedModel {
  const source = reference('cnn').own.tfjs;
  const dir = path.join(temp.dir, 'damaged', name);
  mkdirSync(dir, { recursive: true });
  const json = JSON.parse(readFileSync(source, 'utf8')) as { modelTopology: { config: { layers: Record<string, unknown>[] } } };
  edit(json.modelTopology.config.layers);
  const tfjs = path.join(dir, 'model.json');
  writeFileSync(tfjs, JSON.stringify(json));
  copyFileSync(path.join(path.dirname(source), 'weights.bin'), path.join(dir, 'weights.bin'));
  const saved = { tfjs, h5: path.join(dir, 'model.h5'), keras: path.join(dir, 'model.keras') };
  writeKerasFiles(tfjs, { h5: saved.h5, keras: saved.keras });
  return saved;
}

function layerOfClass(layers: Record<string, unknown>[], className: string): { class_name: string; config: Record<string, unknown> } {
  const layer = layers.find((entry) => entry['class_name'] === className);
  assert.ok(layer, `the CNN has a ${className} layer`);
  return layer as { class_name: string; config: Record<string, unknown> };
}

describe('files the executor cannot run', () => {
  test('weights saved without a configuration give no feature model', async () => {
    const dir = path.join(temp.dir, 'weights-only');
    mkdirSync(dir, { recursive: true });
    const keras2Weights = path.join(dir, 'cnn_weights.h5');
    const keras3Weights = path.join(dir, 'cnn.weights.h5');
    writeKerasFiles(reference('cnn').own.tfjs, { keras2Weights, keras3Weights });
    for (const file of [keras2Weights, keras3Weights, fixturePath('keras', 'keras2_weights.h5'), fixturePath('keras', 'keras3.weights.h5')]) {
      await usingCheckpoint(openCheckpoint(file), async (checkpoint) => {
        assert.ok(checkpoint.tensors.length > 0, `${file} holds weights`);
        assert.equal(await openKerasFeatureModel(checkpoint, { device: 'cpu' }), undefined, file);
      });
    }
  });

  test('an unknown layer class is named in the error', async () => {
    const damaged = damagedCnn('unknown-layer', (layers) => {
      const activation = layerOfClass(layers, 'Activation');
      activation.class_name = 'MyCustomBlock';
      activation.config['name'] = 'my_custom_block_MyCustomBlock1';
    });
    const layerName: Record<FormatKey, string> = { tfjs: 'my_custom_block_MyCustomBlock1', h5: 'my_custom_block', keras: 'my_custom_block' };
    for (const format of FORMATS) {
      await usingCheckpoint(openCheckpoint(damaged[format.key]), async (checkpoint) => {
        await assert.rejects(
          async () => {
            const model = await openKerasFeatureModel(checkpoint, { device: 'cpu' });
            await model?.dispose();
          },
          (error: Error) => {
            assert.ok(error.message.includes('MyCustomBlock'), `${format.label}: the class is named in "${error.message}"`);
            assert.ok(error.message.includes(layerName[format.key]), `${format.label}: the layer is named in "${error.message}"`);
            return true;
          },
        );
      });
    }
  });

  test('a configuration whose weight shapes do not fit the stored tensors names the tensor', async () => {
    // The first convolution claims 6 filters; its stored kernel has 8.
    const damaged = damagedCnn('wrong-filters', (layers) => {
      layerOfClass(layers, 'Conv2D').config['filters'] = 6;
    });
    for (const format of FORMATS) {
      await usingCheckpoint(openCheckpoint(damaged[format.key]), async (checkpoint) => {
        const kernel = checkpoint.tensors.find((tensor) => tensor.shape.join() === '3,3,1,8');
        assert.ok(kernel, `${format.label}: the first convolution's kernel is stored`);
        await assert.rejects(
          async () => {
            const model = await openKerasFeatureModel(checkpoint, { device: 'cpu' });
            assert.ok(model, `${format.label}: a configuration is there`);
            try {
              const values = await loadParameters(checkpoint, model);
              await model.features(reference('cnn').probe, PROBE_ROWS, values);
            } finally {
              await model.dispose();
            }
          },
          (error: Error) => {
            assert.ok(error.message.includes(kernel.name), `${format.label}: ${kernel.name} is named in "${error.message}"`);
            return true;
          },
        );
      });
    }
  });
});

// ---------------------------------------------------------------------------------------

/**
 * Every other member is a candidate, siblings included. The probe is Fashion-MNIST images, as
 * the probeData setting advises (data like the children's); kerasReference.ts says how the
 * lineage was chosen and by what margins it ranks.
 */
describe('lineage of Keras models trained by tfjs-layers', () => {
  let lineage: Lineage;
  before(async () => {
    lineage = await lineageModels();
  });

  const lineageFormats: readonly { key: 'modelJson' | 'h5'; label: string }[] = [
    { key: 'modelJson', label: 'TF.js model.json' },
    { key: 'h5', label: 'Keras 2 .h5' },
  ];
  const methods: readonly ParentMethod[] = ['repr-l1-approx', 'detector'];
  for (const format of lineageFormats) {
    for (const method of methods) {
      test(`${format.label}, ${method}: each fine-tuned child ranks its base first`, async () => {
        const { members, probe } = lineage;
        const fingerprints = new Map<string, Fingerprint>();
        for (const member of members) fingerprints.set(member.name, await fingerprintFile(member[format.key]));
        const children = members.filter((member) => member.parent !== null);
        assert.equal(children.length, 3);
        const failures: string[] = [];
        for (const child of children) {
          const candidates = members.filter((member) => member !== child).map((member) => fingerprints.get(member.name)!);
          const answer = await findParent(fingerprints.get(child.name)!, candidates, { method, probe, device: 'cpu' });
          // The details start with the feature model's description, which names Keras when the saved configuration runs.
          assert.match(answer.details, /^Keras /, `${child.name}: run from its saved configuration (${answer.details})`);
          const ranking = answer.ranking.map((entry) => `${path.basename(path.dirname(entry.candidate))}/${path.basename(entry.candidate)} ${entry.score.toFixed(4)}`);
          const parent = members.find((member) => member.name === child.parent)!;
          if (answer.ranking[0]?.candidate !== parent[format.key]) failures.push(`${child.name} (base ${parent.name}): ${ranking.join(', ')}`);
        }
        assert.deepEqual(failures, [], 'children whose base does not rank first');
      });
    }
  }
});
