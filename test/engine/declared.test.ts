import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CancelledError } from '../../server/src/engine/errors';
import { openCheckpoint } from '../../server/src/engine/formats/index';
import { conflicts, readDeclaredLineage, type DeclaredLink, type DeclaredOptions } from '../../server/src/engine/lineage/declared';
import { findCheckpoints } from '../../server/src/engine/lineage/scan';
import { makeTempDir } from '../helpers';
import { encodeSafetensors } from './safetensorsWriter';

let temp: { dir: string; cleanup: () => void };
before(() => {
  temp = makeTempDir('declared-test-');
});
after(() => temp.cleanup());

let folderCounter = 0;
/** A fresh folder for one layout, so links from one layout never leak into another's assertions. */
function layout(files: Record<string, string | Buffer>): string {
  const root = path.join(temp.dir, `layout${++folderCounter}`);
  for (const [relative, contents] of Object.entries(files)) {
    const file = path.join(root, relative);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, contents);
  }
  return root;
}

/** A small valid safetensors file; `values` makes its bytes (and size) differ from others'. */
function weights(values: readonly number[] = [1, 2], metadata?: Record<string, string>): Buffer {
  const data = Buffer.from(Float32Array.from(values).buffer);
  return encodeSafetensors([{ name: 'w', dtype: 'F32', shape: [values.length], data }], metadata);
}

function json(value: unknown): string {
  return JSON.stringify(value);
}

/** Lists the folder as a scan does and reads its declared lineage; only safetensors files are opened for metadata. */
async function declaredIn(root: string, options: DeclaredOptions = {}): Promise<{ links: DeclaredLink[]; warnings: string[] }> {
  const checkpoints = [];
  for (const file of await findCheckpoints(root)) {
    let metadata: Readonly<Record<string, unknown>> = {};
    if (file.endsWith('.safetensors')) {
      const checkpoint = await openCheckpoint(file);
      metadata = checkpoint.metadata;
      await checkpoint.close();
    }
    checkpoints.push({ path: path.relative(root, file), metadata });
  }
  const warnings: string[] = [];
  const links = await readDeclaredLineage(root, checkpoints, { ...options, onWarning: (message) => warnings.push(message) });
  return { links, warnings };
}

/** child ← parent pairs, for compact assertions on chains. */
function pairs(links: readonly DeclaredLink[]): string[] {
  return links.map((link) => `${link.child} <- ${link.parent ?? `(${link.parentName})`}`);
}

const p = (...parts: string[]): string => path.join(...parts);

describe('Hugging Face config.json', () => {
  test('_name_or_path naming a sibling folder links to its weights; naming its own folder is ignored', async () => {
    const root = layout({
      'base/model.safetensors': weights([1, 2]),
      'base/config.json': json({ _name_or_path: 'base', model_type: 'gpt2' }),
      'tuned/model.safetensors': weights([1, 3]),
      'tuned/config.json': json({ _name_or_path: '../base' }),
    });
    const { links, warnings } = await declaredIn(root);
    assert.deepEqual(links, [
      { child: p('tuned', 'model.safetensors'), parent: p('base', 'model.safetensors'), parentName: '../base', relation: 'finetune', source: p('tuned', 'config.json') + ' _name_or_path', strength: 'weak' },
    ]);
    assert.deepEqual(warnings, []);
  });

  test('an absolute path resolves, and a stale absolute path from another machine resolves by its last component', async () => {
    const root = layout({
      'base/model.safetensors': weights([1, 2]),
      'exact/model.safetensors': weights([1, 3]),
      'stale/model.safetensors': weights([1, 4]),
    });
    writeFileSync(path.join(root, 'exact/config.json'), json({ _name_or_path: path.join(root, 'base') }));
    writeFileSync(path.join(root, 'stale/config.json'), json({ _name_or_path: '/home/someone/models/BASE' }));
    const { links } = await declaredIn(root);
    assert.deepEqual(pairs(links), [
      `${p('exact', 'model.safetensors')} <- ${p('base', 'model.safetensors')}`,
      `${p('stale', 'model.safetensors')} <- ${p('base', 'model.safetensors')}`,
    ]);
  });

  test('a config.json above the checkpoint applies when none is beside it', async () => {
    const root = layout({
      'base/model.safetensors': weights([1, 2]),
      'run/config.json': json({ _name_or_path: 'org/base' }),
      'run/export/model.safetensors': weights([1, 3]),
    });
    const { links } = await declaredIn(root);
    assert.deepEqual(pairs(links), [`${p('run', 'export', 'model.safetensors')} <- ${p('base', 'model.safetensors')}`]);
    assert.equal(links[0]!.source, `${p('run', 'config.json')} _name_or_path`);
  });

  test('a folder holding several checkpoint files resolves to its model weights', async () => {
    const root = layout({
      'base/model.safetensors': weights([1, 2]),
      'base/extra.safetensors': weights([5, 6]),
      'tuned/model.safetensors': weights([1, 3]),
      'tuned/config.json': json({ _name_or_path: 'base' }),
    });
    const { links } = await declaredIn(root);
    assert.deepEqual(pairs(links), [`${p('tuned', 'model.safetensors')} <- ${p('base', 'model.safetensors')}`]);
  });

  test('malformed config.json adds nothing and is reported', async () => {
    const root = layout({
      'base/model.safetensors': weights([1, 2]),
      'bad/model.safetensors': weights([1, 3]),
      'bad/config.json': '{"_name_or_path": "base",',
      'odd/model.safetensors': weights([1, 4]),
      'odd/config.json': json(['base']),
    });
    const { links, warnings } = await declaredIn(root);
    assert.deepEqual(links, []);
    assert.equal(warnings.length, 2);
    assert.match(warnings[0]!, /bad.config\.json: ignored/);
    assert.match(warnings[1]!, /odd.config\.json: ignored \(not a JSON object\)/);
  });
});

describe('PEFT adapters and hub ids', () => {
  test('adapter_config.json links an adapter to a folder named like the hub id, case-insensitively; an unknown hub id stays unresolved', async () => {
    const root = layout({
      'Base-Model/model.safetensors': weights([1, 2, 3, 4]),
      'lora/adapter_model.safetensors': weights([9]),
      'lora/adapter_config.json': json({ base_model_name_or_path: 'SomeOrg/base-model', r: 8 }),
      'elsewhere/model.safetensors': weights([1, 3]),
      'elsewhere/config.json': json({ _name_or_path: 'meta-llama/Llama-2-7b-hf' }),
    });
    const { links } = await declaredIn(root);
    assert.deepEqual(links, [
      { child: p('elsewhere', 'model.safetensors'), parentName: 'meta-llama/Llama-2-7b-hf', relation: 'finetune', source: `${p('elsewhere', 'config.json')} _name_or_path`, strength: 'weak' },
      { child: p('lora', 'adapter_model.safetensors'), parent: p('Base-Model', 'model.safetensors'), parentName: 'SomeOrg/base-model', relation: 'adapter', source: `${p('lora', 'adapter_config.json')} base_model_name_or_path`, strength: 'weak' },
    ]);
  });

  test('a name matching several folders is left unresolved with a warning', async () => {
    const root = layout({
      'a/base/model.safetensors': weights([1, 2]),
      'b/base/model.safetensors': weights([1, 3]),
      'tuned/model.safetensors': weights([1, 4]),
      'tuned/config.json': json({ _name_or_path: 'org/base' }),
    });
    const { links, warnings } = await declaredIn(root);
    assert.deepEqual(pairs(links), [`${p('tuned', 'model.safetensors')} <- (org/base)`]);
    assert.match(warnings[0]!, /"org\/base" matches 2 checkpoints/);
  });
});

describe('model card front matter', () => {
  /** Links from a README.md with `card` as its text, in a folder beside a/ and b/ models. */
  async function cardLinks(card: string): Promise<{ links: DeclaredLink[]; warnings: string[] }> {
    const root = layout({
      'a/model.safetensors': weights([1, 2]),
      'b/model.safetensors': weights([1, 3]),
      'card/model.safetensors': weights([1, 4]),
      'card/README.md': card,
    });
    const result = await declaredIn(root);
    return { links: result.links.filter((link) => link.child.startsWith('card')), warnings: result.warnings };
  }

  const A = p('a', 'model.safetensors');
  const B = p('b', 'model.safetensors');

  test('a block list of two base models is a merge', async () => {
    const { links, warnings } = await cardLinks([
      '---',
      'license: mit',
      'tags:',
      '- merge',
      'base_model:',
      '- org/a',
      '- "org/b"   # the second parent',
      'model-index:',
      '- name: merged',
      '  results: []',
      '---',
      '# A merged model',
      'base_model: not front matter',
    ].join('\n'));
    assert.deepEqual(warnings, []);
    assert.deepEqual(links, [
      { child: p('card', 'model.safetensors'), parent: A, parentName: 'org/a', relation: 'merged', source: `${p('card', 'README.md')} base_model`, strength: 'weak' },
      { child: p('card', 'model.safetensors'), parent: B, parentName: 'org/b', relation: 'merged', source: `${p('card', 'README.md')} base_model`, strength: 'weak' },
    ]);
  });

  const accepted: [string, string[], string][] = [
    ['base_model: org/a', [A], 'finetune'],
    ["base_model: 'org/a' # quoted", [A], 'finetune'],
    ['base_model: [org/a, "org/b"]', [A, B], 'merged'],
    ['base_model:\n  - org/a\n  - org/b', [A, B], 'merged'],
    ['base_model: [org/a]\nbase_model_relation: quantized', [A], 'quantized'],
    ['base_model_relation: adapter\nbase_model: org/a', [A], 'adapter'],
    ['base_model: org/a\nbase_model_relation: merge', [A], 'merged'],
    ['base_model: org/a\nbase_model_relation: distilled', [A], 'unknown'],
  ];
  for (const [frontMatter, parents, relation] of accepted) {
    test(`reads ${JSON.stringify(frontMatter)}`, async () => {
      const { links, warnings } = await cardLinks(`---\n${frontMatter}\n---\n`);
      assert.deepEqual(warnings, []);
      assert.deepEqual(links.map((link) => link.parent), parents);
      assert.ok(links.every((link) => link.relation === relation));
    });
  }

  const empty = ['base_model: ~', 'base_model: []', 'base_model:', 'license: mit'];
  for (const frontMatter of empty) {
    test(`declares nothing for ${JSON.stringify(frontMatter)}`, async () => {
      const { links, warnings } = await cardLinks(`---\n${frontMatter}\n---\n`);
      assert.deepEqual(links, []);
      assert.deepEqual(warnings, []);
    });
  }

  test('a README without front matter declares nothing', async () => {
    const { links, warnings } = await cardLinks('# Model\n\nbase_model: org/a\n');
    assert.deepEqual(links, []);
    assert.deepEqual(warnings, []);
  });

  const malformed = [
    '---\nbase_model: org/a\n',
    '---\nbase_model: [org/a, org/b\n---\n',
    '---\nbase_model:\n  name: org/a\n---\n',
    '---\nbase_model: !!python/object/apply:os.system ["echo"]\n---\n',
    '---\nbase_model: org/a\nbase_model: org/b\n---\n',
    '---\nbase_model: "org/a\n---\n',
    '---\nbase_model: a: b\n---\n',
    '---\nbase_model:\n  - org/a\n    - org/b\n---\n',
    '---\nbase_model: org/a\n  - org/b\n---\n',
    '---\n\tbase_model: org/a\n---\n',
    '---\nbase_model: |\n  org/a\n---\n',
    '---\nbase_model: &anchor org/a\n---\n',
    '---\njust a sentence\nbase_model: org/a\n---\n',
    '---\nbase_model: org/a\nbase_model_relation: [adapter]\n---\n',
  ];
  for (const card of malformed) {
    test(`ignores malformed front matter ${JSON.stringify(card)}`, async () => {
      const { links, warnings } = await cardLinks(card);
      assert.deepEqual(links, []);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]!, /README\.md: ignored/);
    });
  }
});

describe('safetensors metadata', () => {
  const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

  test('a kohya LoRA resolves its base by the SHA-256 of the base file, whatever the base is called now', async () => {
    const base = weights(Array.from({ length: 256 }, (_, i) => i));
    const root = layout({
      'sd/base-renamed.safetensors': base,
      'sd/decoy.safetensors': weights(Array.from({ length: 300 }, (_, i) => -i)),
      'sd/lora.safetensors': weights([7, 8], {
        ss_network_module: 'networks.lora',
        ss_sd_model_name: 'v1-5-pruned.safetensors',
        ss_new_sd_model_hash: sha256(base),
        sshs_model_hash: 'f'.repeat(64),
      }),
    });
    const { links } = await declaredIn(root);
    assert.deepEqual(links, [
      { child: p('sd', 'lora.safetensors'), parent: p('sd', 'base-renamed.safetensors'), parentName: 'v1-5-pruned.safetensors', relation: 'adapter', source: `${p('sd', 'lora.safetensors')} metadata ss_new_sd_model_hash`, strength: 'strong' },
    ]);
  });

  test('a base no larger than the adapter is not a plausible match, and a hash with no file stays unresolved', async () => {
    const small = weights([1]);
    const root = layout({
      'small.safetensors': small,
      'lora.safetensors': weights([7, 8, 9], { ss_network_module: 'networks.lora', ss_new_sd_model_hash: sha256(small) }),
    });
    const { links } = await declaredIn(root);
    assert.deepEqual(links, [
      { child: 'lora.safetensors', parentName: sha256(small), relation: 'adapter', source: 'lora.safetensors metadata ss_new_sd_model_hash', strength: 'weak' },
    ]);
  });

  test('files larger than maxHashBytes are not hashed; the declared name is used instead', async () => {
    const base = weights(Array.from({ length: 256 }, (_, i) => i));
    const root = layout({
      'base.safetensors': base,
      'lora.safetensors': weights([7], { ss_network_module: 'networks.lora', ss_sd_model_name: 'base.safetensors', ss_new_sd_model_hash: sha256(base) }),
    });
    const { links } = await declaredIn(root, { maxHashBytes: 100 });
    assert.deepEqual(links, [
      { child: 'lora.safetensors', parent: 'base.safetensors', parentName: 'base.safetensors', relation: 'adapter', source: 'lora.safetensors metadata ss_sd_model_name', strength: 'weak' },
    ]);
  });

  test('the 8-digit webui hash (64 KiB at 1 MiB) resolves a base of plausible size', async () => {
    const base = weights(Array.from({ length: 300_000 }, (_, i) => Math.sin(i)));
    const legacy = createHash('sha256').update(base.subarray(0x100000, 0x110000)).digest('hex').slice(0, 8);
    const root = layout({
      'base.safetensors': base,
      'lora.safetensors': weights([7], { ss_network_module: 'networks.lora', ss_sd_model_hash: legacy, ss_new_sd_model_hash: 'NOFILE' }),
    });
    const { links } = await declaredIn(root);
    assert.deepEqual(pairs(links), ['lora.safetensors <- base.safetensors']);
    assert.equal(links[0]!.strength, 'strong');
    assert.equal(links[0]!.source, 'lora.safetensors metadata ss_sd_model_hash');
  });

  test('a cancelled read stops with CancelledError', async () => {
    const base = weights(Array.from({ length: 256 }, (_, i) => i));
    const root = layout({
      'base.safetensors': base,
      'lora.safetensors': weights([7], { ss_network_module: 'networks.lora', ss_new_sd_model_hash: sha256(base) }),
    });
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(declaredIn(root, { signal: controller.signal }), CancelledError);
  });

  test('base_model and modelspec.merged_from name parents by file name or stem', async () => {
    const root = layout({
      'sd15.safetensors': weights([1, 2]),
      'anime.safetensors': weights([1, 3]),
      'tuned.safetensors': weights([1, 4], { base_model: 'sd15' }),
      'mix.safetensors': weights([1, 5], { 'modelspec.merged_from': 'sd15, anime.safetensors, Unknown Model' }),
    });
    const { links } = await declaredIn(root);
    assert.deepEqual(pairs(links), [
      'mix.safetensors <- sd15.safetensors',
      'mix.safetensors <- anime.safetensors',
      'mix.safetensors <- (Unknown Model)',
      'tuned.safetensors <- sd15.safetensors',
    ]);
    assert.deepEqual(links.map((link) => link.relation), ['merged', 'merged', 'merged', 'finetune']);
  });
});

describe('checkpoints of one run', () => {
  test('Trainer checkpoint-N folders chain in step order, ending at the final model named by trainer_state.json', async () => {
    const files: Record<string, string | Buffer> = {
      'run/model.safetensors': weights([1, 9]),
      'run/trainer_state.json': json({ global_step: 1000, log_history: [] }),
    };
    for (const step of [100, 200, 300, 1000]) {
      files[`run/checkpoint-${step}/model.safetensors`] = weights([1, step]);
      files[`run/checkpoint-${step}/optimizer.pt`] = 'not read';
      files[`run/checkpoint-${step}/rng_state_0.pth`] = 'not read';
      if (step !== 300) files[`run/checkpoint-${step}/trainer_state.json`] = json({ global_step: step });
    }
    const { links, warnings } = await declaredIn(layout(files));
    const model = (step: number): string => p('run', `checkpoint-${step}`, 'model.safetensors');
    assert.deepEqual(pairs(links), [
      `${model(1000)} <- ${model(300)}`,
      `${model(200)} <- ${model(100)}`,
      `${model(300)} <- ${model(200)}`,
      `${p('run', 'model.safetensors')} <- ${model(1000)}`,
    ]);
    assert.ok(links.every((link) => link.relation === 'run' && link.strength === 'strong'));
    assert.deepEqual(links.map((link) => link.source), [
      `${p('run', 'checkpoint-1000', 'trainer_state.json')} global_step`,
      `${p('run', 'checkpoint-200', 'trainer_state.json')} global_step`,
      `${p('run', 'checkpoint-300')} folder name`,
      `${p('run', 'trainer_state.json')} global_step`,
    ]);
    assert.deepEqual(warnings, []);
  });

  test('numbered file names in one folder chain in numeric order', async () => {
    const root = layout({
      'lightning/epoch=1.ckpt': 'x',
      'lightning/epoch=2.ckpt': 'x',
      'lightning/epoch=10.ckpt': 'x',
      'both/epoch=0-step=100.ckpt': 'x',
      'both/epoch=0-step=200.ckpt': 'x',
      'both/epoch=1-step=300.ckpt': 'x',
      'seeds/run1_step100.pt': 'x',
      'seeds/run1_step200.pt': 'x',
      'seeds/run2_step100.pt': 'x',
      'seeds/run2_step200.pt': 'x',
      'plain/model_1.pt': 'x',
      'plain/model_2.pt': 'x',
      'sizes/llama-7b.pt': 'x',
      'sizes/llama-13b.pt': 'x',
      'shards/model-00001-of-00002.safetensors': weights([1]),
      'shards/model-00002-of-00002.safetensors': weights([2]),
      'lonely/ckpt_0005.pt': 'x',
    });
    const { links } = await declaredIn(root);
    assert.deepEqual(
      links.map((link) => `${pairs([link])[0]} ${link.strength}`),
      [
        `${p('both', 'epoch=0-step=200.ckpt')} <- ${p('both', 'epoch=0-step=100.ckpt')} strong`,
        `${p('both', 'epoch=1-step=300.ckpt')} <- ${p('both', 'epoch=0-step=200.ckpt')} strong`,
        `${p('lightning', 'epoch=10.ckpt')} <- ${p('lightning', 'epoch=2.ckpt')} strong`,
        `${p('lightning', 'epoch=2.ckpt')} <- ${p('lightning', 'epoch=1.ckpt')} strong`,
        `${p('plain', 'model_2.pt')} <- ${p('plain', 'model_1.pt')} weak`,
        `${p('seeds', 'run1_step200.pt')} <- ${p('seeds', 'run1_step100.pt')} strong`,
        `${p('seeds', 'run2_step200.pt')} <- ${p('seeds', 'run2_step100.pt')} strong`,
      ],
    );
    assert.equal(links[0]!.source, `${p('both', 'epoch=0-step=200.ckpt')} file name (epoch=#-step=#.ckpt)`);
  });

  test('the same parent declared twice is one link with both sources', async () => {
    const root = layout({
      'base/model.safetensors': weights([1, 2]),
      'tuned/model.safetensors': weights([1, 3]),
      'tuned/config.json': json({ _name_or_path: 'org/base' }),
      'tuned/README.md': '---\nbase_model: org/base\nbase_model_relation: quantized\n---\n',
    });
    const { links } = await declaredIn(root);
    assert.deepEqual(links, [
      {
        child: p('tuned', 'model.safetensors'),
        parent: p('base', 'model.safetensors'),
        parentName: 'org/base',
        relation: 'quantized',
        source: `${p('tuned', 'config.json')} _name_or_path; ${p('tuned', 'README.md')} base_model, base_model_relation`,
        strength: 'weak',
      },
    ]);
  });
});

describe('conflicts', () => {
  const link = (child: string, parent: string | undefined, relation: DeclaredLink['relation'] = 'finetune'): DeclaredLink => ({
    child,
    ...(parent !== undefined && { parent }),
    parentName: parent ?? 'org/unknown',
    relation,
    source: `${child}/config.json _name_or_path`,
    strength: 'weak',
  });
  const families = [new Set(['base', 'c100', 'c200', 'other', 'x', 'y']), new Set(['stranger'])];
  const related = (a: string, b: string): boolean => families.some((family) => family.has(a) && family.has(b));
  const edges = [
    { parent: 'base', child: 'c100' },
    { parent: 'c100', child: 'c200' },
    { parent: 'base', child: 'other' },
    { parent: 'x', child: 'y' },
  ];

  test('agreeing declarations are not conflicts: the detected parent, an ancestor, an unresolved name, a merge', () => {
    assert.deepEqual(conflicts([
      link('c100', 'base'),
      link('c200', 'base'),
      link('c200', undefined),
      link('c200', 'other', 'merged'),
      link('base', 'other'),
    ], edges, related), [
      {
        child: 'base',
        declaredParent: 'other',
        message: 'base declares other as its parent (base/config.json _name_or_path), but the weights place other below it',
      },
    ]);
  });

  test('an unrelated declared parent is a conflict', () => {
    assert.deepEqual(conflicts([link('c200', 'stranger')], edges, related), [
      {
        child: 'c200',
        declaredParent: 'stranger',
        detectedParent: 'c100',
        message: 'c200 declares stranger as its parent (c200/config.json _name_or_path), but their weights are unrelated',
      },
    ]);
  });

  test('a related declared parent other than the detected one is a conflict', () => {
    assert.deepEqual(conflicts([link('y', 'other')], edges, related), [
      {
        child: 'y',
        declaredParent: 'other',
        detectedParent: 'x',
        message: 'y declares other as its parent (y/config.json _name_or_path), but the weights point to x',
      },
    ]);
  });
});
