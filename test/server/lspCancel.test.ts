import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { WorkDoneProgressCancelNotification, WorkDoneProgressCreateRequest, type ProtocolConnection } from 'vscode-languageserver-protocol/node';
import { GraphRequest, RescanRequest } from '../../server/src/protocol';
import { fixturePath, makeTempDir } from '../helpers';
import { startLanguageServer } from './languageServer';

const temp = makeTempDir();
let stop: (() => void) | undefined;
after(() => {
  stop?.();
  temp.cleanup();
});

/** 240 checkpoints: enough that indexing is still running when the cancellation arrives. */
function manyCheckpoints(folder: string): number {
  const sources = readdirSync(fixturePath('demo', 'models'), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.join(entry.parentPath, entry.name));
  let count = 0;
  for (let copy = 0; copy < 24; copy++) {
    for (const source of sources) {
      const target = path.join(folder, `copy${copy}`, `${count}${path.extname(source)}`);
      mkdirSync(path.dirname(target), { recursive: true });
      copyFileSync(source, target);
      count++;
    }
  }
  return count;
}

test('cancelling the indexing progress stops it; a rescan then indexes everything', async () => {
  const workspace = path.join(temp.dir, 'workspace');
  const total = manyCheckpoints(workspace);
  const cancelled: string[] = [];
  let connection!: ProtocolConnection;
  ({ connection, stop } = await startLanguageServer(workspace, { cacheDirectory: path.join(temp.dir, 'cache') }, (listening) => {
    // The user presses Cancel on the first progress notification as soon as it appears.
    listening.onRequest(WorkDoneProgressCreateRequest.method, (params: { token: string | number }) => {
      if (cancelled.length === 0) {
        cancelled.push(String(params.token));
        setImmediate(() => void listening.sendNotification(WorkDoneProgressCancelNotification.method, { token: params.token }));
      }
      return null;
    });
  }, { window: { workDoneProgress: true } }));

  const settled = async (ready: (nodes: number) => boolean) => {
    for (let attempt = 0; attempt < 900; attempt++) {
      const graph = await connection.sendRequest(GraphRequest);
      if (!graph.indexing && ready(graph.nodes.length)) return graph;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error('the server never settled');
  };
  const partial = await settled(() => true);
  assert.equal(cancelled.length, 1, 'the server asked for a progress token');
  assert.ok(partial.nodes.length < total, `indexing stopped early (${partial.nodes.length} of ${total})`);

  await connection.sendRequest(RescanRequest);
  const full = await settled((nodes) => nodes === total);
  assert.equal(full.nodes.filter((node) => !node.error).length, total);
});
