import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FingerprintCache } from '../../server/src/engine/fingerprint/cache';
import { fingerprintFile } from '../../server/src/engine/fingerprint/fingerprint';
import { lowRankChange, numericalRank } from '../../server/src/engine/lineage/lowRank';
import { scanFolder, type LineageEdge, type ScanResult } from '../../server/src/engine/lineage/scan';
import { makeTempDir } from '../helpers';
import { seededRandom } from './random';
import { encodeGguf, GGML_TYPE, quantize, str, type QuantScheme } from './ggufWriter';
import { encodeSafetensors } from './safetensorsWriter';
import { finetune, mapWeights, modelWriter, randomModel, type Model, type ModelWriter } from './syntheticModels';

let temp: { dir: string; cleanup: () => void };
let writeModel: ModelWriter;
before(() => {
  temp = makeTempDir('relations-test-');
  writeModel = modelWriter(temp.dir);
});
after(() => temp.cleanup());

/** `model` with each listed matrix moved by B·A for random factors of rank `rank` (a merged LoRA). */
function withLowRankUpdate(model: Model, seed: number, rank: number, names: readonly string[]): Model {
  const random = seededRandom(seed);
  return mapWeights(model, (name, values) => {
    if (!names.includes(name)) return values;
    const [rows, columns] = model.layers.get(name)!.shape as [number, number];
    const a = random.normals(rank * columns, 0.02);
    const b = random.normals(rows * rank, 0.02);
    return values.map((value, index) => {
      const row = Math.floor(index / columns);
      const column = index % columns;
      let update = 0;
      for (let k = 0; k < rank; k++) update += b[row * rank + k]! * a[k * columns + column]!;
      return value + update;
    });
  });
}

/** Σ weights[k] · models[k], tensor by tensor. */
function combination(models: readonly Model[], weights: readonly number[]): Model {
  return mapWeights(models[0]!, (name) =>
    models[0]!.layers.get(name)!.values.map((_, i) => models.reduce((sum, model, k) => sum + weights[k]! * model.layers.get(name)!.values[i]!, 0)),
  );
}

function edgeTo(result: ScanResult, child: string): LineageEdge[] {
  return result.edges.filter((edge) => edge.child === child);
}

describe('row-sketch rank', () => {
  test('numericalRank counts the independent directions of a matrix', () => {
    const random = seededRandom(5);
    const u = random.normals(40 * 3);
    const v = random.normals(3 * 16);
    const product = new Float64Array(40 * 16);
    for (let r = 0; r < 40; r++) for (let c = 0; c < 16; c++) for (let k = 0; k < 3; k++) product[r * 16 + c]! += u[r * 3 + k]! * v[k * 16 + c]!;
    assert.equal(numericalRank(product, 40, 16), 3);
    assert.equal(numericalRank(Float64Array.from(random.normals(40 * 16)), 40, 16), 16);
    assert.equal(numericalRank(new Float64Array(40 * 16), 40, 16), 0);
  });

  test('a merged LoRA is a low-rank change and a fine-tune is not', async () => {
    const base = randomModel(10);
    const merged = withLowRankUpdate(base, 11, 4, ['fc1.weight', 'fc2.weight']);
    const tuned = finetune(base, 12);
    const [b, m, t] = await Promise.all([base, merged, tuned].map((model) => fingerprintFile(writeModel(model))));
    assert.deepEqual(lowRankChange(m!, b!), { rank: 4, changedMatrices: 2 });
    assert.equal(lowRankChange(t!, b!), undefined);
  });
});

describe('typed relations in a scan', () => {
  test('merged LoRA, two-parent merge, task arithmetic, converted and quantized copies, adapter and a run are typed and directed', async () => {
    const folder = path.join(temp.dir, 'workspace');
    const base = randomModel(20);
    const a = finetune(base, 21);
    const b = finetune(base, 22);
    const grandchild = finetune(a, 23);
    writeModel(base, { file: path.join(folder, 'base', 'model.safetensors') });
    writeModel(a, { file: path.join(folder, 'a', 'model.safetensors') });
    writeModel(b, { file: path.join(folder, 'b', 'model.safetensors') });
    writeModel(grandchild, { file: path.join(folder, 'a2', 'model.safetensors') });
    writeModel(withLowRankUpdate(a, 24, 8, ['fc1.weight', 'fc2.weight', 'head.weight']), { file: path.join(folder, 'lora-merged', 'model.safetensors') });
    writeModel(combination([a, b], [0.3, 0.7]), { file: path.join(folder, 'soup', 'model.safetensors') });
    writeModel(combination([base, a, b], [-0.2, 0.6, 0.6]), { file: path.join(folder, 'arithmetic', 'model.safetensors') });

    // The grandchild's weights as another framework lays them out: renamed, matrices transposed.
    const exported = [...grandchild.layers].map(([name, layer]) => {
      const [rows, columns] = layer.shape.length === 2 ? (layer.shape as [number, number]) : [layer.shape[0]!, 1];
      const transposed = layer.shape.length === 2 ? Float32Array.from({ length: layer.values.length }, (_, i) => layer.values[(i % rows) * columns + Math.floor(i / rows)]!) : layer.values;
      const shape = layer.shape.length === 2 ? [columns, rows] : layer.shape;
      return { name: `exported/${name.replace('.', '/')}:0`, dtype: 'F32', shape, data: Buffer.from(transposed.buffer) };
    });
    mkdirSync(path.join(folder, 'export'), { recursive: true });
    writeFileSync(path.join(folder, 'export', 'weights.safetensors'), encodeSafetensors(exported));

    // Quantized copies of a model of its own family (GGUF blocks need rows of 32 or 256 values):
    // the same tensor names, matrices in blocks.
    const blockable = randomModel(26, { 'fc1.weight': [64, 512], 'fc1.bias': [64], 'fc2.weight': [32, 256], 'fc2.bias': [32], 'head.weight': [10, 32], 'head.bias': [10] });
    writeModel(blockable, { file: path.join(folder, 'other', 'model.safetensors') });
    writeModel(finetune(blockable, 27), { file: path.join(folder, 'other-tuned', 'model.safetensors') });
    const ggufOf = (scheme: QuantScheme) => encodeGguf({
      metadata: [['general.architecture', str('mlp')], ['general.name', str('other')]],
      tensors: [...blockable.layers].map(([name, layer]) => {
        const blocked = layer.shape.length === 2 && layer.shape[1]! % 256 === 0;
        return {
          name,
          type: blocked ? GGML_TYPE[scheme] : GGML_TYPE.F32,
          dims: [...layer.shape].reverse(),
          data: blocked ? quantize(scheme, layer.values).bytes : Buffer.from(layer.values.buffer),
        };
      }),
    });
    mkdirSync(path.join(folder, 'gguf'), { recursive: true });
    writeFileSync(path.join(folder, 'gguf', 'other-q8_0.gguf'), ggufOf('Q8_0'));
    writeFileSync(path.join(folder, 'gguf', 'other-q4_k.gguf'), ggufOf('Q4_K'));

    // A PEFT adapter declaring its base by a relative path.
    const random = seededRandom(25);
    const factors = ['fc1', 'fc2'].flatMap((module) => {
      const [rows, columns] = base.layers.get(`${module}.weight`)!.shape as [number, number];
      return [
        { name: `base_model.model.${module}.lora_A.weight`, dtype: 'F32', shape: [4, columns], data: Buffer.from(random.normals(4 * columns, 0.02).buffer) },
        { name: `base_model.model.${module}.lora_B.weight`, dtype: 'F32', shape: [rows, 4], data: Buffer.from(random.normals(rows * 4, 0.02).buffer) },
      ];
    });
    mkdirSync(path.join(folder, 'adapter'), { recursive: true });
    writeFileSync(path.join(folder, 'adapter', 'adapter_model.safetensors'), encodeSafetensors(factors));
    writeFileSync(path.join(folder, 'adapter', 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 4, base_model_name_or_path: '../b', target_modules: ['fc1', 'fc2'] }));

    // Three checkpoints of one run fine-tuning b.
    let step = b;
    for (const [k, number] of [100, 200, 300].entries()) {
      step = finetune(step, 30 + k, { relative: 0.02 });
      writeModel(step, { file: path.join(folder, 'run', `checkpoint-${number}`, 'model.safetensors') });
      writeFileSync(path.join(folder, 'run', `checkpoint-${number}`, 'trainer_state.json'), JSON.stringify({ global_step: number, log_history: [] }));
    }

    const result = await scanFolder(folder, { cache: new FingerprintCache(path.join(temp.dir, 'cache')) });
    const only = (child: string) => {
      const edges = edgeTo(result, child);
      assert.equal(edges.length, 1, `${child}: ${JSON.stringify(edges)}`);
      return edges[0]!;
    };
    assert.deepEqual(
      [only('lora-merged/model.safetensors')].map((edge) => [edge.parent, edge.relation]),
      [['a/model.safetensors', 'adapter']],
    );
    assert.match(only('lora-merged/model.safetensors').evidence, /rank ≤ 8/);
    const soup = edgeTo(result, 'soup/model.safetensors');
    assert.deepEqual(soup.map((edge) => [edge.parent, edge.relation]).sort(), [['a/model.safetensors', 'merged'], ['b/model.safetensors', 'merged']]);
    const arithmetic = edgeTo(result, 'arithmetic/model.safetensors');
    assert.deepEqual(arithmetic.map((edge) => edge.parent).sort(), ['a/model.safetensors', 'b/model.safetensors', 'base/model.safetensors']);
    assert.ok(arithmetic.every((edge) => edge.relation === 'merged'));
    assert.deepEqual([only('gguf/other-q8_0.gguf')].map((edge) => [edge.parent, edge.relation]), [['other/model.safetensors', 'quantized']]);
    assert.deepEqual([only('gguf/other-q4_k.gguf')].map((edge) => [edge.parent, edge.relation]), [['other/model.safetensors', 'quantized']]);
    assert.match(only('gguf/other-q4_k.gguf').evidence, /Q4_K/);
    const converted = result.edges.find((edge) => edge.relation === 'converted');
    assert.deepEqual(converted && [converted.parent, converted.child].sort(), ['a2/model.safetensors', 'export/weights.safetensors']);
    assert.deepEqual([only('adapter/adapter_model.safetensors')].map((edge) => [edge.parent, edge.relation]), [['b/model.safetensors', 'adapter']]);
    assert.deepEqual([only('run/checkpoint-200/model.safetensors')].map((edge) => [edge.parent, edge.relation]), [['run/checkpoint-100/model.safetensors', 'run']]);
    assert.deepEqual([only('run/checkpoint-300/model.safetensors')].map((edge) => [edge.parent, edge.relation]), [['run/checkpoint-200/model.safetensors', 'run']]);
    assert.deepEqual([only('run/checkpoint-100/model.safetensors')].map((edge) => [edge.parent, edge.relation]), [['b/model.safetensors', 'finetune']]);
    // The fine-tunes stay linked to their base (which end is the root is the tree's business,
    // tested elsewhere), and no merge or adapter is anyone's parent.
    const linked = (x: string, y: string) => result.edges.some((edge) => edge.relation === 'finetune' && [edge.parent, edge.child].sort().join() === [x, y].sort().join());
    assert.ok(linked('a/model.safetensors', 'base/model.safetensors'));
    assert.ok(linked('b/model.safetensors', 'base/model.safetensors'));
    const leaves = ['gguf/other-q8_0.gguf', 'gguf/other-q4_k.gguf', 'soup/model.safetensors', 'arithmetic/model.safetensors', 'lora-merged/model.safetensors', 'adapter/adapter_model.safetensors'];
    assert.ok(result.edges.every((edge) => !leaves.includes(edge.parent)));
    // Two families: the quantized model's, and everything else.
    assert.deepEqual(result.families.map((family) => family.length).sort((x, y) => x - y), [4, 12], JSON.stringify(result.families));
  });
});
