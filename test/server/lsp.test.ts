import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { DidOpenTextDocumentNotification, HoverRequest, type Hover, type MarkupContent, type ProtocolConnection } from 'vscode-languageserver-protocol/node';
import { InspectRequest } from '../../server/src/protocol';
import { encodeSafetensors, float32 } from '../engine/safetensorsWriter';
import { makeTempDir } from '../helpers';
import { startLanguageServer } from './languageServer';

const temp = makeTempDir();
let connection: ProtocolConnection;

let stop: () => void;

before(async () => {
  writeFileSync(
    path.join(temp.dir, 'base.safetensors'),
    encodeSafetensors([{ name: 'w', dtype: 'F32', shape: [2, 2], data: float32(1, 2, 3, 4) }]),
  );
  writeFileSync(path.join(temp.dir, 'broken.pt'), 'PK\x03\x04 this zip stops here');
  ({ connection, stop } = await startLanguageServer(temp.dir, { maxFileSizeMB: 0, cacheDirectory: path.join(temp.dir, '.cache') }));
});

after(() => {
  stop();
  temp.cleanup();
});

async function hoverOn(content: string, needle: string): Promise<Hover | null> {
  const uri = pathToFileURL(path.join(temp.dir, 'train.py')).toString();
  await connection.sendNotification(DidOpenTextDocumentNotification.type, {
    textDocument: { uri, languageId: 'python', version: 1, text: content },
  });
  const lines = content.split('\n');
  const line = lines.findIndex((text) => text.includes(needle));
  return connection.sendRequest(HoverRequest.type, {
    textDocument: { uri },
    position: { line, character: lines[line]!.indexOf(needle) + 1 },
  });
}

test('hover on a relative checkpoint path in a Python file shows its summary', async () => {
  const hover = await hoverOn('import torch\nweights = load_file("base.safetensors")\n', 'base.safetensors');
  assert.ok(hover, 'expected a hover');
  const markdown = (hover.contents as MarkupContent).value;
  assert.match(markdown, /safetensors/);
  assert.match(markdown, /4 parameters/);
  assert.deepEqual(hover.range?.start, { line: 1, character: 'weights = load_file("'.length });
});

test('hover elsewhere gives nothing', async () => {
  assert.equal(await hoverOn('x = "missing.safetensors"\n', 'missing.safetensors'), null);
  assert.equal(await hoverOn('learning_rate = 0.1\n', 'learning_rate'), null);
});

test('a corrupt checkpoint shows as unreadable with the reason', async () => {
  const hover = await hoverOn('state = torch.load("broken.pt")\n', 'broken.pt');
  assert.match((hover!.contents as MarkupContent).value, /Unreadable: .*broken\.pt/);
});

test('the inspect request returns the report and its Markdown', async () => {
  const uri = pathToFileURL(path.join(temp.dir, 'base.safetensors')).toString();
  const result = await connection.sendRequest(InspectRequest, { uri });
  assert.equal(result.report.format, 'safetensors');
  assert.equal(result.report.parameterCount, 4);
  assert.match(result.markdown, /\| `w` \| F32 \| \[2, 2\] \|/);
});
