/**
 * Architecture recognition and the tfjs state-dict executor against PyTorch: fixtures written
 * by test/fixtures/repr/make_repr_fixtures.py hold real state dicts (torch.save), a probe and
 * the features PyTorch's forward pass computes for it. The small models are committed; the
 * ResNets (45 MB and 32 MB) are written to .cache/repr-fixtures on first use, which needs
 * Debian's /usr/bin/python3 with torch and numpy (as the zoo test does).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { before, describe, test } from 'node:test';
import { CancelledError, CheckpointError } from '../../server/src/engine/errors';
import type { Checkpoint } from '../../server/src/engine/formats/checkpoint';
import { openCheckpoint } from '../../server/src/engine/formats/index';
import type { Tensor, TensorInfo } from '../../server/src/engine/formats/tensor';
import { recogniseArchitecture, type Architecture, type ArchitectureHints, type Recognition } from '../../server/src/engine/repr/architecture';
import type { FeatureModel } from '../../server/src/engine/repr/featureModel';
import { loadParameters, openStateDictFeatureModel } from '../../server/src/engine/repr/stateDictModel';
import { fixturePath, REPO_ROOT } from '../helpers';
import { usingCheckpoint } from './checkpointTesting';

const PYTHON = '/usr/bin/python3';
const SCRIPT = fixturePath('repr', 'make_repr_fixtures.py');
const CACHE_DIR = path.join(REPO_ROOT, '.cache', 'repr-fixtures');
const GENERATE_TIMEOUT_MS = 5 * 60 * 1000;
/** Features must match PyTorch's to this fraction of the largest feature magnitude (float32 sums in another order). */
const RELATIVE_TOLERANCE = 1e-4;

function recognised(result: Recognition): Architecture {
  assert.ok('architecture' in result, 'reason' in result ? result.reason : 'recognised');
  return result.architecture;
}

function reasonOf(result: Recognition): string {
  assert.ok('reason' in result, `expected no architecture, got ${'architecture' in result ? result.architecture.description : ''}`);
  return result.reason;
}

function info(name: string, shape: number[]): TensorInfo {
  const elementCount = shape.reduce((total, size) => total * size, 1);
  return { name, dtype: 'F32', shape, elementCount, byteSize: 4 * elementCount };
}

function tensorList(file: string): TensorInfo[] {
  return (JSON.parse(readFileSync(fixturePath('repr', file), 'utf8')) as [string, number[]][]).map(([name, shape]) => info(name, shape));
}

interface Expected {
  readonly probe: Float32Array;
  readonly rows: number;
  readonly features: Float32Array;
  readonly columns: number;
}

async function readExpected(file: string): Promise<Expected> {
  return usingCheckpoint(openCheckpoint(file), async (checkpoint) => {
    const array = (name: string) => {
      const tensor = checkpoint.tensors.find((candidate) => candidate.name === name);
      assert.ok(tensor, `${file} holds ${name}`);
      return tensor;
    };
    const probe = array('probe');
    const features = array('features');
    return {
      probe: Float32Array.from(await probe.read()),
      rows: probe.shape[0]!,
      features: Float32Array.from(await features.read()),
      columns: features.shape[1]!,
    };
  });
}

/** Recognises the state dict, runs PyTorch's probe through it and compares with PyTorch's features. */
async function checkAgainstPyTorch(directory: string, name: string, hints: ArchitectureHints = {}): Promise<{ architecture: Architecture; model: FeatureModel }> {
  const expected = await readExpected(path.join(directory, `${name}.expected.npz`));
  return usingCheckpoint(openCheckpoint(path.join(directory, `${name}.pt`)), async (checkpoint) => {
    const architecture = recognised(recogniseArchitecture(checkpoint.tensors, hints));
    const model = await openStateDictFeatureModel(architecture, { device: 'auto' });
    const parameters = await loadParameters(checkpoint, model);
    const features = await model.features(expected.probe, expected.rows, parameters);
    assert.equal(features.rows, expected.rows);
    assert.equal(features.columns, expected.columns);
    const scale = expected.features.reduce((largest, value) => Math.max(largest, Math.abs(value)), 0);
    assert.ok(scale > 0, 'the reference features are not all zero');
    let worst = 0;
    features.values.forEach((value, i) => (worst = Math.max(worst, Math.abs(value - expected.features[i]!))));
    assert.ok(worst <= RELATIVE_TOLERANCE * scale, `${name}: largest difference ${worst} against feature scale ${scale}`);
    await model.dispose();
    return { architecture, model };
  });
}

describe('features equal PyTorch on committed models', () => {
  const directory = fixturePath('repr');

  test('the zoo MLP', async () => {
    const { architecture, model } = await checkAgainstPyTorch(directory, 'mlp');
    assert.equal(architecture.kind, 'mlp');
    assert.equal(architecture.description, 'MLP 784→8→6 (features: 6)');
    assert.deepEqual(architecture.head, ['head.weight', 'head.bias']);
    assert.deepEqual([...model.parameters.keys()], ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']);
    assert.match(model.device, /^tfjs (wasm|cpu|tensorflow)/);
  });

  test('the zoo SmallCNN, its input size derived from the width of fc', async () => {
    const { architecture } = await checkAgainstPyTorch(directory, 'cnn');
    assert.equal(architecture.kind, 'convnet');
    assert.deepEqual(architecture.inputShape, [1, 28, 28]);
    assert.equal(architecture.featureWidth, 16);
    // Running statistics are parameters the features depend on; step counters are not.
    assert.ok(architecture.parameters.has('features.1.running_var'));
    assert.ok(![...architecture.parameters.keys()].some((name) => name.includes('num_batches_tracked')));
  });

  test('a ViT with timm names', async () => {
    const { architecture } = await checkAgainstPyTorch(directory, 'vit-timm', { attentionHeads: 2 });
    assert.equal(architecture.kind, 'vit');
    assert.deepEqual(architecture.inputShape, [3, 16, 16]);
    assert.deepEqual(architecture.head, ['head.weight', 'head.bias']);
  });

  test('a ViT with Hugging Face names', async () => {
    const { architecture } = await checkAgainstPyTorch(directory, 'vit-hf', { attentionHeads: 3 });
    assert.equal(architecture.kind === 'vit' && architecture.naming, 'huggingface');
    assert.deepEqual(architecture.inputShape, [3, 12, 12]);
    assert.deepEqual(architecture.head, ['classifier.weight', 'classifier.bias']);
  });

  test('the head count matters: a wrong one gives other features', async () => {
    await assert.rejects(checkAgainstPyTorch(directory, 'vit-timm', { attentionHeads: 1 }), /largest difference/);
  });
});

describe('features equal PyTorch on ResNets (generated into .cache)', () => {
  before(() => {
    const run = spawnSync(PYTHON, [SCRIPT, 'resnet', CACHE_DIR], { cwd: REPO_ROOT, encoding: 'utf8', timeout: GENERATE_TIMEOUT_MS });
    if (run.status !== 0) {
      const output = `${run.stdout ?? ''}\n${run.stderr ?? ''}`.trim().split('\n').slice(-15).join('\n');
      assert.fail(
        `${SCRIPT} could not write the ResNet fixtures (${run.error?.message ?? `exit status ${run.status}`}); it needs ${PYTHON} with torch ` +
          `and numpy (apt-get install -y --no-install-recommends python3-torch python3-numpy):\n${output}`,
      );
    }
  });

  test('ResNet-18 at 32×32', async () => {
    const { architecture } = await checkAgainstPyTorch(CACHE_DIR, 'resnet18', { imageSize: 32 });
    assert.match(architecture.description, /^ResNet-18 \(basic blocks \[2,2,2,2\]\) on 3×32×32 \(features: 512\)/);
  });

  test('a bottleneck ResNet (ResNet-50 blocks, one per stage) at 32×32', async () => {
    const { architecture } = await checkAgainstPyTorch(CACHE_DIR, 'resnet-bottleneck', { imageSize: 32 });
    assert.match(architecture.description, /^ResNet-14 \(bottleneck blocks \[1,1,1,1\]\)/);
    assert.equal(architecture.featureWidth, 2048);
  });
});

describe('recognition from names and shapes', () => {
  test("torchvision's ResNet-18, -34 and -50", () => {
    for (const [file, depth, width] of [
      ['resnet18.tensors.json', 18, 512],
      ['resnet34.tensors.json', 34, 512],
      ['resnet50.tensors.json', 50, 2048],
    ] as const) {
      const tensors = tensorList(file);
      const architecture = recognised(recogniseArchitecture(tensors));
      assert.equal(architecture.kind, 'resnet');
      assert.match(architecture.description, new RegExp(`^ResNet-${depth} .* on 3×224×224 \\(features: ${width}\\)$`));
      assert.deepEqual(architecture.head, ['fc.weight', 'fc.bias']);
      // Every tensor but the head and the step counters is a parameter of the features.
      const expected = tensors.filter((tensor) => !tensor.name.startsWith('fc.') && !tensor.name.endsWith('num_batches_tracked')).map((tensor) => tensor.name);
      assert.deepEqual([...architecture.parameters.keys()].sort(), expected.sort());
    }
  });

  test('wrapper prefixes are removed before recognition', () => {
    const tensors = tensorList('resnet18.tensors.json').map((tensor) => ({ ...tensor, name: `module.${tensor.name}` }));
    assert.ok(recognised(recogniseArchitecture(tensors)).parameters.has('conv1.weight'));
  });

  test('a ResNeXt (grouped convolutions) is refused with the reason', () => {
    const tensors = tensorList('resnet50.tensors.json').map((tensor) =>
      /^layer\d\.\d+\.conv2\.weight$/.test(tensor.name) ? info(tensor.name, [tensor.shape[0]!, tensor.shape[1]! / 4, 3, 3]) : tensor,
    );
    assert.match(reasonOf(recogniseArchitecture(tensors)), /ResNet.*layer1\.0\.conv2 takes 16 input channels where 64 arrive \(grouped convolutions are not supported\); only weight-space methods apply/);
  });

  test('MLP layers are chained by width when the file sorts its names', () => {
    const architecture = recognised(
      recogniseArchitecture([
        info('classifier.bias', [10]),
        info('classifier.weight', [10, 32]),
        info('layers.0.bias', [64]),
        info('layers.0.weight', [64, 100]),
        info('layers.2.bias', [32]),
        info('layers.2.weight', [32, 64]),
      ]),
    );
    assert.equal(architecture.description, 'MLP 100→64→32 (features: 32)');
    assert.deepEqual(architecture.head, ['classifier.weight', 'classifier.bias']);
  });

  test('an MLP under net.N names, square hidden layers kept in natural order', () => {
    const names = ['net.0', 'net.2', 'net.4', 'net.10'];
    const shapes = [[16, 8], [16, 16], [16, 16], [3, 16]];
    const architecture = recognised(recogniseArchitecture(names.map((name, i) => info(`${name}.weight`, shapes[i]!))));
    assert.equal(architecture.kind === 'mlp' && architecture.layers.map((layer) => layer.weight).join(' '), '0.weight 2.weight 4.weight');
  });

  test('a ViT width whose head count the weights cannot tell needs a hint', async () => {
    await usingCheckpoint(openCheckpoint(fixturePath('repr', 'vit-timm.pt')), async (checkpoint) => {
      assert.match(reasonOf(recogniseArchitecture(checkpoint.tensors)), /number of attention heads of width 16 is not stored in the weights/);
      assert.match(reasonOf(recogniseArchitecture(checkpoint.tensors, { attentionHeads: 3 })), /3 attention heads do not divide width 16/);
    });
  });

  test('standard ViT widths take their usual head count', () => {
    const width = 768;
    const tensors = [
      info('patch_embed.proj.weight', [width, 3, 16, 16]),
      info('cls_token', [1, 1, width]),
      info('pos_embed', [1, 197, width]),
      info('blocks.0.norm1.weight', [width]),
      info('blocks.0.norm1.bias', [width]),
      info('blocks.0.attn.qkv.weight', [3 * width, width]),
      info('blocks.0.attn.proj.weight', [width, width]),
      info('blocks.0.norm2.weight', [width]),
      info('blocks.0.norm2.bias', [width]),
      info('blocks.0.mlp.fc1.weight', [4 * width, width]),
      info('blocks.0.mlp.fc2.weight', [width, 4 * width]),
      info('norm.weight', [width]),
      info('norm.bias', [width]),
    ];
    const architecture = recognised(recogniseArchitecture(tensors));
    assert.equal(architecture.kind === 'vit' && architecture.attentionHeads, 12);
    assert.deepEqual(architecture.inputShape, [3, 224, 224]);
    assert.deepEqual(architecture.head, []);
    // An extra tensor the executor would not use is named, not ignored.
    const withDistillation = [...tensors, info('dist_token', [1, 1, width])];
    assert.match(reasonOf(recogniseArchitecture(withDistillation)), /1 tensors are not part of it \(dist_token\)/);
  });

  test('a Hugging Face ViTModel (no prefix, with pooler) is recognised; the pooler is not on the path', async () => {
    await usingCheckpoint(openCheckpoint(fixturePath('repr', 'vit-hf.pt')), async (checkpoint) => {
      const tensors: TensorInfo[] = checkpoint.tensors
        .filter((tensor) => !tensor.name.startsWith('classifier.'))
        .map((tensor) => ({ ...tensor, name: tensor.name.replace(/^vit\./, '') }));
      tensors.push(info('pooler.dense.weight', [12, 12]), info('pooler.dense.bias', [12]));
      const architecture = recognised(recogniseArchitecture(tensors, { attentionHeads: 3 }));
      assert.deepEqual(architecture.head, []);
      assert.ok(architecture.parameters.has('embeddings.cls_token'));
      assert.ok(![...architecture.parameters.keys()].some((name) => name.startsWith('pooler')));
    });
  });

  test('a LoRA adapter is not taken for an MLP although its factors chain', () => {
    const adapter = [
      info('base_model.model.fc.lora_A.weight', [4, 1568]),
      info('base_model.model.fc.lora_B.weight', [64, 4]),
      info('base_model.model.head.lora_A.weight', [4, 64]),
      info('base_model.model.head.lora_B.weight', [10, 4]),
    ];
    assert.match(reasonOf(recogniseArchitecture(adapter)), /^a LoRA adapter \(base_model\.model\.fc\.lora_A\.weight\), not a whole network/);
  });

  test('anything else is refused with a plain reason', () => {
    const tensors = [info('conv.weight', [64, 3, 7, 7]), info('bn.weight', [64]), info('proj.weight', [10, 64])];
    assert.match(reasonOf(recogniseArchitecture(tensors)), /^no recognised architecture .*: 3 tensors, first conv\.weight \[64,3,7,7\], bn\.weight \[64\], proj\.weight \[10,64\]; only weight-space methods apply$/);
    assert.match(reasonOf(recogniseArchitecture([info('head.weight', [10, 64]), info('head.bias', [10])])), /single linear layer/);
  });
});

/** An in-memory checkpoint: tensors whose values are 0, 1, 2, ... */
function memoryCheckpoint(file: string, tensors: readonly TensorInfo[]): Checkpoint {
  const stored: Tensor[] = tensors.map((tensor) => ({
    ...tensor,
    read: async (start = 0, count = tensor.elementCount - start) => Float64Array.from({ length: count }, (_, i) => start + i),
    chunks: async function* () {
      yield Float64Array.from({ length: tensor.elementCount }, (_, i) => i);
    },
  }));
  return { path: file, format: 'safetensors', metadata: {}, tensors: stored, warnings: [], close: async () => undefined };
}

describe('loadParameters', () => {
  const mlp = [info('fc1.weight', [4, 3]), info('fc1.bias', [4]), info('head.weight', [2, 4])];

  test('reads every parameter under another wrapper prefix, as float32', async () => {
    const model = await openStateDictFeatureModel(recognised(recogniseArchitecture(mlp)));
    const lightning = memoryCheckpoint('/runs/child.ckpt', mlp.map((tensor) => ({ ...tensor, name: `model.${tensor.name}` })));
    const values = await loadParameters(lightning, model);
    assert.deepEqual([...values.keys()], ['fc1.weight', 'fc1.bias']);
    assert.deepEqual([...values.get('fc1.weight')!], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  });

  test('a missing or reshaped tensor is an error naming the file', async () => {
    const model = await openStateDictFeatureModel(recognised(recogniseArchitecture(mlp)));
    const missing = memoryCheckpoint('/runs/a.pt', [mlp[0]!, mlp[2]!]);
    await assert.rejects(loadParameters(missing, model), (error: unknown) => error instanceof CheckpointError && error.file === '/runs/a.pt' && /fc1\.bias is missing/.test(error.message));
    const reshaped = memoryCheckpoint('/runs/b.pt', [info('fc1.weight', [5, 3]), mlp[1]!, mlp[2]!]);
    await assert.rejects(loadParameters(reshaped, model), (error: unknown) => error instanceof CheckpointError && /\/runs\/b\.pt: tensor fc1\.weight has shape \[5, 3\]; MLP 3→4 .* needs \[4, 3\]/.test(error.message));
  });

  test('features refuse a probe or parameters of the wrong size, and stop when cancelled', async () => {
    const model = await openStateDictFeatureModel(recognised(recogniseArchitecture(mlp)));
    const parameters = await loadParameters(memoryCheckpoint('/runs/c.pt', mlp), model);
    const probe = new Float32Array(2 * 3);
    assert.equal((await model.features(probe, 2, parameters)).columns, 4);
    await assert.rejects(model.features(probe, 3, parameters), /probe holds 6 values, not 3 samples of shape \[3\]/);
    await assert.rejects(model.features(probe, 2, new Map([['fc1.weight', new Float32Array(12)]])), /no value given for parameter fc1\.bias/);
    await assert.rejects(model.features(probe, 2, parameters, AbortSignal.abort()), CancelledError);
  });
});
