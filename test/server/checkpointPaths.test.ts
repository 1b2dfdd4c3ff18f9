import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { checkpointPathAt, resolveCandidates } from '../../server/src/checkpointPaths';

test('finds a quoted checkpoint path in Python under the cursor', () => {
  const line = `model.load_state_dict(torch.load("runs/exp1/model.pt"))`;
  const found = checkpointPathAt(line, line.indexOf('exp1'));
  assert.deepEqual(found, { text: 'runs/exp1/model.pt', start: line.indexOf('runs'), end: line.indexOf('.pt') + 3 });
});

test('finds an unquoted path in YAML and drops trailing punctuation in prose', () => {
  assert.equal(checkpointPathAt('init_from: ckpt/base.safetensors', 15)?.text, 'ckpt/base.safetensors');
  assert.equal(checkpointPathAt('Fine-tuned from ./base.pth.', 20)?.text, './base.pth');
});

test('ignores strings and words that are not checkpoints', () => {
  assert.equal(checkpointPathAt(`open("notes.txt")`, 8), undefined);
  assert.equal(checkpointPathAt('learning_rate: 0.001', 3), undefined);
  assert.equal(checkpointPathAt(`x = "a.pt"; y = "b.txt"`, 18), undefined);
});

test('handles sharded index files as checkpoints', () => {
  assert.equal(checkpointPathAt(`"model.safetensors.index.json"`, 3)?.text, 'model.safetensors.index.json');
});

test('resolves relative paths against the document, then each workspace folder', () => {
  const candidates = resolveCandidates('w/model.pt', '/ws/src', ['/ws', '/other']);
  assert.deepEqual(candidates, [path.resolve('/ws/src/w/model.pt'), path.resolve('/ws/w/model.pt'), path.resolve('/other/w/model.pt')]);
  assert.deepEqual(resolveCandidates('/abs/model.pt', '/ws', ['/ws']), ['/abs/model.pt']);
});
