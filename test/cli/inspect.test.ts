import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { encodeSafetensors, float32 } from '../engine/safetensorsWriter';
import { makeTempDir, REPO_ROOT } from '../helpers';

const CLI = path.join(REPO_ROOT, 'dist', 'cli.js');
const temp = makeTempDir();
after(temp.cleanup);

function run(...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
}

function writeModel(name: string): string {
  const file = path.join(temp.dir, name);
  writeFileSync(
    file,
    encodeSafetensors(
      [
        { name: 'fc.weight', dtype: 'F32', shape: [2, 3], data: float32(1, 2, 3, 4, 5, 6) },
        { name: 'fc.bias', dtype: 'F32', shape: [2], data: float32(0.5, -0.5) },
      ],
      { base_model: 'org/base' },
    ),
  );
  return file;
}

test('inspect --json reports format, counts, dtypes, shapes and metadata', () => {
  const file = writeModel('model.safetensors');
  const result = run('inspect', file, '--json');
  assert.equal(result.status, 0, result.stderr);
  const report = JSON.parse(result.stdout);
  assert.equal(report.path, file);
  assert.equal(report.format, 'safetensors');
  assert.equal(report.tensorCount, 2);
  assert.equal(report.parameterCount, 8);
  assert.deepEqual(report.dtypes, { F32: { tensors: 2, parameters: 8 } });
  assert.deepEqual(report.tensors.map((tensor: { shape: number[] }) => tensor.shape), [[2, 3], [2]]);
  assert.deepEqual(report.metadata, { base_model: 'org/base' });
  assert.equal(report.error, undefined);
});

test('inspect prints a readable summary', () => {
  const result = run('inspect', writeModel('readable.safetensors'));
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stdout, /format\s+safetensors/);
  assert.match(result.stdout, /parameters\s+8 /);
  assert.match(result.stdout, /fc\.weight\s+F32\s+\[2, 3\]/);
  assert.match(result.stdout, /base_model: org\/base/);
});

test('a corrupt file gives exit code 1 and a message naming the file, and other files are still reported', () => {
  const broken = path.join(temp.dir, 'broken.safetensors');
  writeFileSync(broken, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x7b]));
  const good = writeModel('good.safetensors');
  const result = run('inspect', broken, good, '--json');
  assert.equal(result.status, 1);
  const [brokenReport, goodReport] = JSON.parse(result.stdout);
  assert.ok(brokenReport.error.startsWith(broken), brokenReport.error);
  assert.match(brokenReport.error, /header/i);
  assert.equal(goodReport.parameterCount, 8);
});

test('a missing file and an unknown format are reported, not thrown', () => {
  const missing = run('inspect', path.join(temp.dir, 'nope.pt'));
  assert.equal(missing.status, 1);
  assert.match(missing.stdout, /nope\.pt: cannot open: ENOENT/);
  const text = path.join(temp.dir, 'notes.pt');
  writeFileSync(text, 'just some text, not a checkpoint');
  const unknown = run('inspect', text);
  assert.equal(unknown.status, 1);
  assert.match(unknown.stdout, /notes\.pt: /);
});

test('usage errors exit with 2', () => {
  assert.equal(run().status, 2);
  assert.equal(run('inspect').status, 2);
  assert.equal(run('frobnicate', 'x').status, 2);
  assert.equal(run('--help').status, 0);
});

test('devices reports the compute backends that load, honouring --device', () => {
  const auto = run('devices', '--json');
  assert.equal(auto.status, 0, auto.stderr);
  const devices = JSON.parse(auto.stdout);
  assert.ok(['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'].includes(devices.tfjs.backend), auto.stdout);
  assert.equal(devices.onnxruntime.providers.at(-1), 'cpu', 'the CPU provider is always the last resort');
  const cpu = JSON.parse(run('devices', '--device', 'cpu', '--json').stdout);
  assert.deepEqual(cpu.onnxruntime.providers, ['cpu']);
  assert.notEqual(cpu.tfjs.backend, 'tensorflow-gpu');
  assert.equal(run('devices', '--device', 'tpu').status, 2);
});
