import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { FingerprintCache } from '../../server/src/engine/fingerprint/cache';
import { scanFolder } from '../../server/src/engine/lineage/scan';
import { makeTempDir } from '../helpers';
import { seededRandom } from './random';
import { encodeSafetensors } from './safetensorsWriter';

const temp = makeTempDir();
after(temp.cleanup);

function writeModel(file: string, weights: Float32Array): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, encodeSafetensors([{ name: 'layer.weight', dtype: 'F32', shape: [weights.length / 64, 64], data: Buffer.from(weights.buffer) }]));
}

/**
 * Plumbing test of declarations inside `scan`: a training run's checkpoint-N folders chain in
 * step order whatever the weights' geometry says, and a config that names an unrelated model
 * as its base is reported as a conflict.
 */
test('scan follows a run\'s step order and reports a base the weights contradict', async () => {
  const random = seededRandom(11);
  const folder = path.join(temp.dir, 'workspace');
  let weights = random.normals(64 * 64, 0.1);
  for (const step of [100, 200, 300]) {
    // Each save continues from the previous one: a cumulative walk, as training is.
    const update = random.normals(weights.length, 0.004);
    weights = weights.map((value, i) => value + update[i]!);
    writeModel(path.join(folder, 'run', `checkpoint-${step}`, 'model.safetensors'), weights);
    writeFileSync(path.join(folder, 'run', `checkpoint-${step}`, 'trainer_state.json'), JSON.stringify({ global_step: step }));
  }
  writeModel(path.join(folder, 'other', 'model.safetensors'), random.normals(64 * 64, 0.1));
  writeFileSync(path.join(folder, 'other', 'config.json'), JSON.stringify({ _name_or_path: '../run/checkpoint-100' }));

  const result = await scanFolder(folder, { cache: new FingerprintCache(path.join(temp.dir, 'cache')) });
  const edge = (child: string) => result.edges.find((e) => e.child === child);
  assert.equal(edge(path.join('run', 'checkpoint-200', 'model.safetensors'))?.parent, path.join('run', 'checkpoint-100', 'model.safetensors'));
  assert.equal(edge(path.join('run', 'checkpoint-300', 'model.safetensors'))?.parent, path.join('run', 'checkpoint-200', 'model.safetensors'));
  assert.match(edge(path.join('run', 'checkpoint-300', 'model.safetensors'))!.evidence, /declared in/);
  assert.equal(edge(path.join('other', 'model.safetensors')), undefined, 'an unrelated model gets no parent');
  assert.equal(result.conflicts.length, 1);
  assert.equal(result.conflicts[0]!.child, path.join('other', 'model.safetensors'));
  assert.match(result.conflicts[0]!.message, /unrelated/);
});
