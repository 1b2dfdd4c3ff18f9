import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import type { IndexSnapshot } from '../../server/src/engine/lineage/workspaceIndex';
import { lineageMarkdown } from '../../server/src/lineageMarkdown';

const root = path.resolve('/workspace');
const at = (name: string) => path.join(root, name);
const label = (file: string) => path.relative(root, file);

function snapshot(edges: IndexSnapshot['edges']): IndexSnapshot {
  const files = [...new Set(edges.flatMap((edge) => [edge.parent, edge.child]))];
  return { version: 1, checkpoints: files.map((file) => ({ path: file }) as IndexSnapshot['checkpoints'][number]), edges, families: [files], conflicts: [], indexing: false };
}

describe('lineage in the hover', () => {
  test('a merge names every parent; a run checkpoint and an adapter say what they are', () => {
    const graph = snapshot([
      { parent: at('base.pt'), child: at('a.pt'), relation: 'finetune', confidence: 0.9, evidence: 'relative weight distance 0.05' },
      { parent: at('a.pt'), child: at('soup.pt'), relation: 'merged', confidence: 1, evidence: 'merge of 2 checkpoints with weights 0.3, 0.7' },
      { parent: at('b.pt'), child: at('soup.pt'), relation: 'merged', confidence: 1, evidence: 'merge of 2 checkpoints with weights 0.3, 0.7' },
      { parent: at('a.pt'), child: at('run/checkpoint-200/model.safetensors'), relation: 'run', confidence: 1, evidence: 'declared' },
      { parent: at('base.pt'), child: at('lora/adapter_model.safetensors'), relation: 'adapter', confidence: 0.5, evidence: 'LoRA adapter of rank 4' },
    ]);
    const soup = lineageMarkdown(graph, at('soup.pt'), label);
    assert.match(soup, /\*\*merged from\*\* `a\.pt` \+ `b\.pt`/);
    assert.match(soup, /ancestors: `base\.pt`/);
    assert.match(lineageMarkdown(graph, at('run/checkpoint-200/model.safetensors'), label), /\*\*later checkpoint of the run of\*\* `a\.pt`/);
    assert.match(lineageMarkdown(graph, at('lora/adapter_model.safetensors'), label), /\*\*adapter on\*\* `base\.pt` — confidence 50%/);
  });
});
