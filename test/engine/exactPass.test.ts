import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { mix32, SAMPLE_SEED } from '../../server/src/engine/fingerprint/elementHash';
import { fingerprintFile, SAMPLES_PER_TENSOR } from '../../server/src/engine/fingerprint/fingerprint';
import { rankParents } from '../../server/src/engine/lineage/parent';
import { rankParentsSettled } from '../../server/src/engine/lineage/exactPass';
import { makeTempDir } from '../helpers';
import { seededRandom } from './random';
import { encodeSafetensors } from './safetensorsWriter';

const temp = makeTempDir();
after(temp.cleanup);

function write(name: string, values: Float32Array): string {
  const file = path.join(temp.dir, name);
  writeFileSync(file, encodeSafetensors([{ name: 'layer.weight', dtype: 'F32', shape: [values.length / 500, 500], data: Buffer.from(values.buffer) }]));
  return file;
}

/**
 * Two candidates whose fingerprints disagree with the truth: `hidden` differs from the child
 * mostly at elements the sample skips (the sample sees almost nothing), `uniform` differs a
 * little everywhere. The true distance of `hidden` is larger, so the exact pass must overturn
 * the fingerprints' ranking.
 */
test('an exact pass over the files settles candidates the fingerprints cannot tell apart', async () => {
  const count = 200 * 500;
  const random = seededRandom(3);
  const child = random.normals(count, 0.1);
  const threshold = (SAMPLES_PER_TENSOR / count) * 4294967296;
  // A faint change everywhere keeps exactly inherited values out of the decision.
  const faint = random.normals(count, 0.0008);
  const hidden = child.map((value, i) => value + faint[i]! + (mix32(i, SAMPLE_SEED) >= threshold && i % 7 === 0 ? 0.004 : 0));
  const noise = random.normals(count, 0.0012);
  const uniform = child.map((value, i) => value + noise[i]!);
  const childPrint = await fingerprintFile(write('child.safetensors', child));
  const hiddenPrint = await fingerprintFile(write('hidden.safetensors', hidden));
  const uniformPrint = await fingerprintFile(write('uniform.safetensors', uniform));
  const exact = (a: Float32Array) => Math.sqrt(a.reduce((sum, value, i) => sum + (value - child[i]!) ** 2, 0));
  assert.ok(exact(hidden) > exact(uniform), 'the construction: hidden is truly farther');

  const estimated = rankParents(childPrint, [hiddenPrint, uniformPrint]);
  assert.equal(estimated.parent?.fingerprint.path, hiddenPrint.path, 'the fingerprints alone prefer the hidden change');
  const settled = await rankParentsSettled(childPrint, [hiddenPrint, uniformPrint]);
  assert.equal(settled.exactPass, true);
  assert.equal(settled.parent?.fingerprint.path, uniformPrint.path);
});

test('no exact pass when the fingerprints are decisive', async () => {
  const random = seededRandom(4);
  const child = random.normals(200 * 500, 0.1);
  const near = child.map((value) => value + random.normal(0, 0.001));
  const far = child.map((value) => value + random.normal(0, 0.01));
  const prints = await Promise.all([write('c2.safetensors', child), write('near.safetensors', near), write('far.safetensors', far)].map((file) => fingerprintFile(file)));
  const settled = await rankParentsSettled(prints[0]!, [prints[2]!, prints[1]!]);
  assert.equal(settled.exactPass, false);
  assert.equal(settled.parent?.fingerprint.path, prints[1]!.path);
});
