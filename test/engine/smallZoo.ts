import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { REPO_ROOT } from '../helpers';

const PYTHON = '/usr/bin/python3';
const ZOO_DIR = path.join(REPO_ROOT, '.cache', 'zoo', 'small');
const GENERATE_TIMEOUT_MS = 5 * 60 * 1000;

/**
 * Builds (or finds up to date) the small model zoo in .cache/zoo/small with its probe batch,
 * and returns its folder. make_zoo.py returns at once when the zoo is up to date (same
 * generator source, preset and seed) and otherwise trains it again (a minute or two). That
 * needs Debian's /usr/bin/python3 with torch, numpy, h5py and the Fashion-MNIST package, which
 * .ci/run installs; without them the calling test fails, it does not skip.
 */
export function ensureSmallZoo(): string {
  const args = [path.join(REPO_ROOT, 'test', 'zoo', 'make_zoo.py'), '--out', ZOO_DIR, '--preset', 'small'];
  const run = spawnSync(PYTHON, args, { cwd: REPO_ROOT, encoding: 'utf8', timeout: GENERATE_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 });
  if (run.status === 0) {
    const probe = spawnSync(PYTHON, [path.join(REPO_ROOT, 'test', 'zoo', 'make_probe.py'), '--out', path.join(ZOO_DIR, 'probe.npy')], { encoding: 'utf8', timeout: 120_000 });
    if (probe.status !== 0) assert.fail(`make_probe.py failed: ${probe.stderr}`);
    return ZOO_DIR;
  }
  const output = `${run.stdout ?? ''}\n${run.stderr ?? ''}`.trim().split('\n').slice(-20).join('\n');
  const probe = spawnSync(PYTHON, ['-c', 'import torch, numpy'], { encoding: 'utf8', timeout: 120_000 });
  if (probe.error || probe.status !== 0) {
    assert.fail(
      `The model zoo test needs ${PYTHON} with torch and numpy, which it cannot import ` +
        `(${probe.error?.message ?? probe.stderr.trim().split('\n').pop()}). On Debian: ` +
        'apt-get install -y --no-install-recommends python3-torch python3-numpy dataset-fashion-mnist (as .ci/run does).',
    );
  }
  const why = run.error ? `${run.error.message}` : `exit status ${run.status}${run.signal ? `, signal ${run.signal}` : ''}`;
  assert.fail(`make_zoo.py failed to generate ${ZOO_DIR} (${why}):\n${output}`);
}
