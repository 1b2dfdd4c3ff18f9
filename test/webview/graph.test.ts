/**
 * The ancestry-graph webview in headless Chromium: drawing, interaction, messages, state, themes
 * and safety with hostile file names. Screenshots go to test/.artifacts/ for a person to look at.
 */
import * as assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { EDGES, HOSTILE_LABEL, N, NODES, baseName, edgeLabel, sampleGraph, uriOf } from './sampleGraph';
import { artifactPath, openWebview, type BrowserGlobals, type WebviewHarness } from './webviewHarness';

const GRAPH = 'svg.graph';

function nodeSelector(uri: string): string {
  return `${GRAPH} g.node[data-uri=${JSON.stringify(uri)}]`;
}

function edgeSelector(parent: string, child: string): string {
  return `${GRAPH} g.edge[data-parent=${JSON.stringify(parent)}][data-child=${JSON.stringify(child)}]`;
}

/** Computed style values of the first element matching the selector. */
async function styleOf(page: Page, selector: string, properties: readonly string[]): Promise<Record<string, string>> {
  return page.evaluate(
    ({ selector, properties }) => {
      const w = globalThis as unknown as BrowserGlobals;
      const element = w.document.querySelector(selector);
      if (!element) throw new Error(`nothing matches ${selector}`);
      const computed = w.getComputedStyle(element);
      return Object.fromEntries(properties.map((name: string) => [name, String(computed.getPropertyValue(name))]));
    },
    { selector, properties },
  );
}

async function classesOf(page: Page, selector: string): Promise<string[]> {
  return (await page.getAttribute(selector, 'class'))?.split(/\s+/) ?? [];
}

async function lastPosted(harness: WebviewHarness): Promise<{ type: string; [key: string]: unknown } | undefined> {
  const posted = await harness.posted();
  return posted[posted.length - 1];
}

describe('ancestry graph webview', () => {
  let harness: WebviewHarness;
  let page: Page;

  before(async () => {
    harness = await openWebview({ entry: 'client/src/webview/graph.ts', css: 'media/graph.css', title: 'Model Lineage' });
    page = harness.page;
    await harness.load();
  });

  after(async () => {
    await harness?.close();
  });

  it('says ready, then shows an indexing indicator and an empty state', async () => {
    assert.deepEqual(await harness.posted(), [{ type: 'ready' }]);
    await harness.send({ type: 'graph', graph: sampleGraph({ nodes: [], edges: [], families: [], conflicts: [], indexing: true }) });
    assert.equal(await page.isVisible('.indexing'), true);
    assert.match(await page.innerText('.empty'), /Looking for checkpoints/);
    await harness.send({ type: 'graph', graph: sampleGraph({ nodes: [], edges: [], families: [], conflicts: [], indexing: false }) });
    assert.equal(await page.isVisible('.indexing'), false);
    assert.match(await page.innerText('.empty'), /No checkpoints in this workspace/);
    assert.equal(await page.isVisible(GRAPH), false);
  });

  it('draws every checkpoint and every link with its label', async () => {
    await harness.send({ type: 'graph', graph: sampleGraph({ indexing: true }) });
    assert.equal(await page.isVisible('.empty'), false);
    assert.equal(await page.isVisible('.indexing'), true, 'the partial graph still says it is indexing');
    assert.equal(await page.locator(`${GRAPH} g.node`).count(), NODES.length);
    assert.equal(await page.locator(`${GRAPH} g.edge`).count(), EDGES.length);
    for (const node of NODES) {
      const selector = nodeSelector(node.uri);
      const name = await page.textContent(`${selector} .node-name`);
      assert.equal(name, node.error ? `⚠ ${baseName(node.label)}` : baseName(node.label), `name of ${node.label}`);
      assert.ok((await page.getAttribute(selector, 'aria-label'))?.startsWith(node.label), `aria-label of ${node.label}`);
      const meta = await page.textContent(`${selector} .node-meta`);
      assert.ok(meta?.includes(node.format ?? ''), `format of ${node.label}: ${meta}`);
      assert.match(meta ?? '', /\d(\.\d)? (KB|MB|GB)/, `size of ${node.label}`);
      if (node.parameters !== undefined) assert.match(meta ?? '', /params/);
      assert.equal((await classesOf(page, selector)).includes('unreadable'), node.error !== undefined, `unreadable mark of ${node.label}`);
    }
    for (const edge of EDGES) {
      const selector = edgeSelector(edge.parent, edge.child);
      assert.equal(await page.textContent(`${selector} .edge-label text`), edgeLabel(edge));
      assert.ok((await classesOf(page, selector)).includes(`rel-${edge.relation}`));
    }
    assert.match(await page.innerText('.counts'), /11 checkpoints · 9 links/);
    assert.match(await page.innerText('.conflicts'), /1 conflict/);
    assert.equal(await page.locator('.legend li').count(), 10, 'nine relations and the unreadable mark');
  });

  it('styles each relation differently, with dashed copies, dotted adapters and double merges', async () => {
    await harness.send({ type: 'graph', graph: sampleGraph() });
    const props = ['stroke', 'stroke-dasharray', 'stroke-width', 'stroke-linecap'] as const;
    const style = async (parent: string, child: string): Promise<Record<string, string>> => styleOf(page, `${edgeSelector(parent, child)} .edge-line`, props);
    const finetune = await style(N.base.uri, N.chat.uri);
    const fp16 = await style(N.base.uri, N.fp16.uri);
    const pruned = await style(N.chat.uri, N.pruned.uri);
    const converted = await style(N.resnet.uri, N.resnetSt.uri);
    const adapter = await style(N.chat.uri, N.lora.uri);
    const merged = await style(N.chat.uri, N.merged.uri);
    assert.equal(finetune['stroke-dasharray'], 'none', 'fine-tunes are solid');
    for (const copy of [fp16, pruned, converted]) assert.notEqual(copy['stroke-dasharray'], 'none', 'derived copies are dashed');
    assert.equal(adapter['stroke-linecap'], 'round', 'adapters are dotted');
    assert.notEqual(adapter['stroke-dasharray'], 'none');
    assert.notEqual(adapter['stroke-dasharray'], fp16['stroke-dasharray']);
    assert.equal(await page.locator(`${edgeSelector(N.chat.uri, N.merged.uri)} .edge-inner`).count(), 1, 'merges are a double line');
    assert.ok(parseFloat(merged['stroke-width']!) > parseFloat(finetune['stroke-width']!));
    const colours = [finetune, fp16, pruned, converted, adapter, merged].map((s) => s['stroke']);
    assert.equal(new Set(colours).size, colours.length, `every relation has its own colour: ${colours.join(', ')}`);
    for (const colour of colours) assert.match(colour!, /^rgb/, 'colours come from the theme variables');
  });

  it('shows a checkpoint’s details and its incoming evidence on hover', async () => {
    await page.hover(nodeSelector(N.pruned.uri));
    const text = await page.innerText('.tooltip');
    assert.ok(text.includes('/work/project/models/llama-7b/chat/model-pruned-50.safetensors'), text);
    assert.match(text, /safetensors/);
    assert.match(text, /6\.3 GB/);
    assert.match(text, /6,738,415,616/);
    assert.match(text, /Pruned copy from models\/llama-7b\/chat\/model\.safetensors \(90%\)/);
    assert.ok(text.includes('50.0% of weights zeroed'), 'evidence of the incoming edge');
    await page.hover(nodeSelector(N.broken.uri));
    assert.match(await page.innerText('.tooltip'), /truncated zip archive/);
    await page.hover(nodeSelector(N.code.uri));
    assert.match(await page.innerText('.tooltip'), /config\.json names base-fp16/, 'conflicts are shown');
    await page.mouse.move(2, 790);
    assert.equal(await page.isVisible('.tooltip'), false);
  });

  it('posts open on click, reveal on Alt+click, and open on Enter', async () => {
    await page.click(nodeSelector(N.chat.uri));
    assert.deepEqual(await lastPosted(harness), { type: 'open', uri: N.chat.uri });
    await page.click(nodeSelector(N.resnet.uri), { modifiers: ['Alt'] });
    assert.deepEqual(await lastPosted(harness), { type: 'reveal', uri: N.resnet.uri });
    await page.focus(nodeSelector(N.lora.uri));
    await page.keyboard.press('Enter');
    assert.deepEqual(await lastPosted(harness), { type: 'open', uri: N.lora.uri });
    await page.click(nodeSelector(N.fp16.uri), { button: 'right' });
    assert.equal(await page.isVisible('.menu'), true, 'right-click opens the menu');
    await page.click('.menu >> text=Reveal in Explorer');
    assert.deepEqual(await lastPosted(harness), { type: 'reveal', uri: N.fp16.uri });
    assert.equal(await page.isVisible('.menu'), false);
  });

  it('filters by family', async () => {
    await page.selectOption('#family-filter', '1');
    assert.equal(await page.locator(`${GRAPH} g.node`).count(), 3);
    for (const node of [N.resnet, N.resnetSt, N.cats]) assert.equal(await page.isVisible(nodeSelector(node.uri)), true);
    for (const node of [N.base, N.chat, N.broken]) assert.equal(await page.locator(nodeSelector(node.uri)).count(), 0, `${node.label} is hidden`);
    assert.equal(await page.locator(`${GRAPH} g.edge`).count(), 2);
    await page.selectOption('#family-filter', 'all');
    assert.equal(await page.locator(`${GRAPH} g.node`).count(), NODES.length);
  });

  it('focuses one checkpoint: its ancestors and descendants stay, the rest dims', async () => {
    await harness.send({ type: 'graph', graph: sampleGraph(), focus: N.chat.uri });
    await harness.settle();
    const relatives = [N.base, N.chat, N.pruned, N.lora, N.merged];
    const others = [N.fp16, N.code, N.resnet, N.resnetSt, N.cats, N.broken];
    assert.ok((await classesOf(page, nodeSelector(N.chat.uri))).includes('focused'));
    const opacity = async (uri: string): Promise<number> => Number((await styleOf(page, nodeSelector(uri), ['opacity']))['opacity']);
    for (const node of relatives) assert.equal(await opacity(node.uri), 1, `${node.label} stays`);
    for (const node of others) {
      const value = await opacity(node.uri);
      assert.ok(value < 0.5, `${node.label} is dimmed (${value})`);
    }
    assert.ok(!(await classesOf(page, edgeSelector(N.base.uri, N.chat.uri))).includes('dimmed'));
    assert.ok(!(await classesOf(page, edgeSelector(N.chat.uri, N.merged.uri))).includes('dimmed'));
    assert.ok((await classesOf(page, edgeSelector(N.code.uri, N.merged.uri))).includes('dimmed'), 'the merge’s other parent is not a relative');
    assert.ok((await classesOf(page, edgeSelector(N.base.uri, N.fp16.uri))).includes('dimmed'));
    assert.equal(await page.inputValue('#focus-select'), N.chat.uri);

    await page.click(nodeSelector(N.resnet.uri), { modifiers: ['Shift'] });
    assert.deepEqual(await lastPosted(harness), { type: 'focusChanged', uri: N.resnet.uri });
    assert.ok((await classesOf(page, nodeSelector(N.chat.uri))).includes('dimmed'));
    await page.keyboard.press('Escape');
    assert.deepEqual(await lastPosted(harness), { type: 'focusChanged', uri: null });
    assert.equal(await page.locator(`${GRAPH} .dimmed`).count(), 0);
  });

  it('exports a standalone SVG with resolved colours', async () => {
    await page.selectOption('#focus-select', N.code.uri);
    await page.click('button.export');
    const message = await lastPosted(harness);
    assert.equal(message?.type, 'exportSvg');
    const svgText = String(message?.['svg']);
    writeFileSync(artifactPath('graph-export.svg'), svgText);
    assert.ok(!svgText.includes('var('), 'no CSS variables left');
    assert.ok(!svgText.includes('file:///'), 'no file URIs in the image');
    const parsed = await page.evaluate((text) => {
      const w = globalThis as unknown as BrowserGlobals;
      const root = new w.DOMParser().parseFromString(text, 'image/svg+xml').documentElement;
      const texts = [...root.querySelectorAll('text')].map((t: { textContent: string }) => t.textContent);
      return {
        error: root.querySelector('parsererror')?.textContent ?? null,
        tag: root.tagName,
        viewBox: root.getAttribute('viewBox'),
        texts,
        scripts: root.querySelectorAll('script').length,
        strokes: [...root.querySelectorAll('.edge-line')].map((p: { getAttribute(name: string): string }) => p.getAttribute('stroke')),
        dimmed: [...root.querySelectorAll('.node.dimmed')].map((g: { getAttribute(name: string): string }) => g.getAttribute('opacity')),
      };
    }, svgText);
    assert.equal(parsed.error, null);
    assert.equal(parsed.tag, 'svg');
    assert.match(parsed.viewBox ?? '', /^0 0 \d+ \d+$/);
    assert.equal(parsed.scripts, 0);
    for (const node of NODES) assert.ok(parsed.texts.some((t) => t.endsWith(baseName(node.label))), `${node.label} is in the export`);
    for (const edge of EDGES) assert.ok(parsed.texts.includes(edgeLabel(edge)));
    assert.ok(parsed.strokes.every((s) => /^rgb/.test(s)), `edge strokes resolved: ${parsed.strokes.join(' ')}`);
    assert.ok(parsed.dimmed.length > 0 && parsed.dimmed.every((o) => Number(o) < 0.5), 'the focus is kept in the export');
    await page.selectOption('#focus-select', '');
  });

  it('saves zoom, pan, family filter and focus, and restores them after a reload', async () => {
    await page.selectOption('#family-filter', '0');
    await page.selectOption('#focus-select', N.pruned.uri);
    const box = await page.locator(GRAPH).boundingBox();
    assert.ok(box);
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.mouse.wheel(0, -240);
    await page.mouse.move(box.x + 40, box.y + 40);
    await page.mouse.down();
    await page.mouse.move(box.x + 120, box.y + 90, { steps: 5 });
    await page.mouse.up();
    const before = await page.getAttribute(`${GRAPH} .viewport`, 'transform');
    const saved = await page.evaluate(() => JSON.parse((globalThis as unknown as BrowserGlobals).sessionStorage.getItem('vscode-state')));
    assert.equal(saved.family, '0');
    assert.equal(saved.focus, N.pruned.uri);
    assert.equal(saved.autoFit, false);
    assert.ok(saved.zoom > 0);

    await harness.load();
    await harness.send({ type: 'graph', graph: sampleGraph() });
    assert.equal(await page.inputValue('#family-filter'), '0');
    assert.equal(await page.inputValue('#focus-select'), N.pruned.uri);
    assert.equal(await page.getAttribute(`${GRAPH} .viewport`, 'transform'), before);
    assert.ok((await classesOf(page, nodeSelector(N.pruned.uri))).includes('focused'));
    assert.equal(await page.locator(nodeSelector(N.resnet.uri)).count(), 0);

    await page.selectOption('#family-filter', 'all');
    await page.selectOption('#focus-select', '');
    await page.click('button[title^="Fit"]');
  });

  it('follows the theme: light, dark and high contrast give different node colours', async () => {
    await harness.setTheme('light');
    const light = await styleOf(page, `${nodeSelector(N.base.uri)} .node-box`, ['fill', 'stroke']);
    const lightText = await styleOf(page, `${nodeSelector(N.base.uri)} .node-name`, ['fill']);
    const lightEdge = await styleOf(page, `${edgeSelector(N.base.uri, N.chat.uri)} .edge-line`, ['stroke']);
    await page.screenshot({ path: artifactPath('graph-light.png') });
    await harness.setTheme('dark');
    const dark = await styleOf(page, `${nodeSelector(N.base.uri)} .node-box`, ['fill', 'stroke']);
    const darkText = await styleOf(page, `${nodeSelector(N.base.uri)} .node-name`, ['fill']);
    const darkEdge = await styleOf(page, `${edgeSelector(N.base.uri, N.chat.uri)} .edge-line`, ['stroke']);
    await page.screenshot({ path: artifactPath('graph-dark.png') });
    assert.equal(light['fill'], 'rgb(248, 248, 248)');
    assert.equal(dark['fill'], 'rgb(37, 37, 38)');
    assert.notEqual(light['stroke'], dark['stroke']);
    assert.notEqual(lightText['fill'], darkText['fill']);
    assert.equal(lightEdge['stroke'], 'rgb(26, 133, 255)');
    assert.equal(darkEdge['stroke'], 'rgb(55, 148, 255)');

    await harness.setTheme('high-contrast');
    const contrast = await styleOf(page, `${nodeSelector(N.base.uri)} .node-box`, ['fill', 'stroke']);
    await page.screenshot({ path: artifactPath('graph-high-contrast.png') });
    assert.equal(contrast['stroke'], 'rgb(111, 195, 223)', 'high contrast borders use contrastBorder');
    await harness.setTheme('dark');

    // One more picture: a focused lineage with a tooltip, for a person to judge.
    await harness.send({ type: 'focus', uri: N.chat.uri });
    await page.hover(nodeSelector(N.merged.uri));
    await page.screenshot({ path: artifactPath('graph-dark-focus.png') });
    await harness.send({ type: 'focus', uri: null });
    await page.mouse.move(2, 790);
  });

  it('shows file names with markup as text and runs nothing from them', async () => {
    const selector = nodeSelector(uriOf(HOSTILE_LABEL));
    const texts = (await page.$$eval(`${selector} text`, (elements) => elements.map((e) => e.textContent ?? ''))).join(' | ');
    // The label's last '/' falls inside '</script>': the name line is 'script>.safetensors'.
    assert.ok(texts.includes('script>.safetensors') && texts.includes('<img src'), texts);
    assert.ok((await page.getAttribute(selector, 'aria-label'))?.startsWith(HOSTILE_LABEL));
    await page.hover(selector);
    assert.ok((await page.innerText('.tooltip')).includes('<img src=x onerror=window.__pwned=1>'));
    const state = await page.evaluate(() => {
      const w = globalThis as unknown as BrowserGlobals;
      return {
        pwned: w.__pwned ?? null,
        injected: w.document.querySelectorAll('.canvas img, .canvas script, .toolbar img, .toolbar script').length,
        options: [...w.document.querySelectorAll('#focus-select option')].map((o: { textContent: string }) => o.textContent),
        csp: w.__cspViolations,
      };
    });
    assert.equal(state.pwned, null);
    assert.equal(state.injected, 0);
    assert.ok(state.options.includes(HOSTILE_LABEL));
    assert.deepEqual(state.csp, [], 'the page stays within its Content-Security-Policy');
  });
});
