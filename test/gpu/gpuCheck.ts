/**
 * `npm run gpu-check`: one run on a machine with a GPU says which compute backends load and
 * how fast the model-running lineage methods are on each device, next to the CPU. Prints
 * figures; asserts nothing. Needs only the repository's own fixtures.
 */
import * as path from 'node:path';
import { describeComputeDevices } from '../../server/src/engine/compute/devices';
import { selectTfjsBackend, type DevicePreference } from '../../server/src/engine/compute/tfjsBackend';
import { loadDetector } from '../../server/src/engine/detector/detector';
import { openCheckpoint } from '../../server/src/engine/formats/index';
import { detectorFiles } from '../../server/src/engine/lineage/parentQuery';
import type { FeatureModel } from '../../server/src/engine/repr/featureModel';
import { openOnnxFeatureModel } from '../../server/src/engine/repr/onnxFeatureModel';
import { defaultProbe } from '../../server/src/engine/repr/probe';
import { loadParameters } from '../../server/src/engine/repr/stateDictModel';
import { REPO_ROOT } from '../helpers';

const REPEATS = 20;

async function timed(what: string, run: () => Promise<unknown>): Promise<void> {
  await run(); // warm-up: sessions, kernels, shader compilation
  const started = performance.now();
  for (let i = 0; i < REPEATS; i++) await run();
  console.log(`  ${what.padEnd(52)} ${((performance.now() - started) / REPEATS).toFixed(2).padStart(9)} ms`);
}

async function onnxFeatures(device: DevicePreference): Promise<void> {
  const file = path.join(REPO_ROOT, 'test', 'fixtures', 'onnx', 'cnn.onnx');
  let model: FeatureModel | undefined;
  const checkpoint = await openCheckpoint(file);
  try {
    model = await openOnnxFeatureModel(file, { device });
    const parameters = await loadParameters(checkpoint, model);
    for (const rows of [64, 512]) {
      const probe = defaultProbe(model.inputShape, { rows });
      await timed(`ONNX CNN features, ${rows} probe images (${model.device})`, () => model!.features(probe.values, probe.rows, parameters));
    }
  } finally {
    await model?.dispose();
    await checkpoint.close();
  }
}

async function main(): Promise<void> {
  for (const preference of ['gpu', 'cpu'] as const) {
    const devices = await describeComputeDevices(preference);
    console.log(`device preference ${preference}`);
    console.log(`  TensorFlow.js backend: ${devices.tfjs.backend ?? `none (${devices.tfjs.error})`}${devices.tfjs.skipped.length ? `; passed over ${devices.tfjs.skipped.join('; ')}` : ''}`);
    console.log(`  onnxruntime providers to try: ${devices.onnxruntime.providers.join(' → ')}${devices.onnxruntime.unavailable.length ? `; not installed: ${devices.onnxruntime.unavailable.join(', ')}` : ''}`);
    await onnxFeatures(preference);
  }
  const { tf, backend } = await selectTfjsBackend('gpu');
  const a = tf.randomNormal([1024, 1024]);
  await timed(`tfjs 1024×1024 matmul (${backend})`, async () => {
    const product = tf.matMul(a, a);
    await product.data();
    product.dispose();
  });
  a.dispose();
  const { onnx, json } = detectorFiles();
  for (const providers of [['cuda'], ['webgpu'], ['cpu']]) {
    try {
      const detector = await loadDetector(onnx, json, { executionProviders: providers });
      const matrix = Float32Array.from({ length: 256 * 784 }, (_, i) => Math.sin(i));
      const features = { values: Float32Array.from({ length: 64 * 128 }, (_, i) => Math.cos(i)), rows: 64, columns: 128 };
      const candidate = { weights: [{ parent: matrix, child: matrix, rows: 256, columns: 784 }], features: { parent: features, child: features } };
      await timed(`learned detector, 10 candidates (${detector.description})`, () => detector.score(Array(10).fill(candidate)));
      await detector.dispose();
    } catch (error) {
      console.log(`  learned detector on ${providers.join(', ')}: not available (${(error as Error).message.split('\n')[0]})`);
    }
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
