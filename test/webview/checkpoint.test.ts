/**
 * The checkpoint viewer's page (client/src/webview/checkpoint.ts) in a real Chromium: bundled as
 * the extension bundles it, loaded under the same Content-Security-Policy as in VS Code, with
 * `acquireVsCodeApi` stubbed to record what the page posts. View models use real inspect reports
 * of the demo checkpoints. Screenshots go to test/.artifacts/.
 *
 * Run alone: npx esbuild test/webview/checkpoint.test.ts --bundle --platform=node
 *   --outfile=/tmp/checkpoint.test.js --external:esbuild --external:playwright-core
 *   && node --test /tmp/checkpoint.test.js   (from the repository root)
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import type * as Esbuild from 'esbuild';
import type * as Playwright from 'playwright-core';
import type { Browser, Page } from 'playwright-core';
import { inspectCheckpoint } from '../../server/src/engine/inspect';
import type {
  CheckpointComparison,
  CheckpointHostMessage,
  CheckpointLineage,
  CheckpointReport,
  CheckpointWebviewMessage,
} from '../../client/src/webview/checkpointMessages';
import { makeTempDir, REPO_ROOT } from '../helpers';

/** REPO_ROOT is right when compiled into out/test/; a bundle elsewhere runs from the repository root. */
const ROOT = [REPO_ROOT, process.cwd()].find((dir) => existsSync(path.join(dir, 'client', 'src', 'webview', 'checkpoint.ts'))) ?? REPO_ROOT;
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = path.join(ROOT, 'test', '.artifacts');
const DEMO = path.join(ROOT, 'test', 'fixtures', 'demo', 'models');
const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM}`;
/** esbuild and playwright-core load from the repository's node_modules, wherever this file was bundled to. */
const requireFromRoot = createRequire(path.join(ROOT, 'package.json'));
const { build } = requireFromRoot('esbuild') as typeof Esbuild;
const { chromium } = requireFromRoot('playwright-core') as typeof Playwright;

// ---- Themes: the variables VS Code sets on <html> (Dark Modern and Light Modern) -------------

const COMMON = {
  '--vscode-font-family': 'system-ui, "Ubuntu", "Droid Sans", sans-serif',
  '--vscode-font-size': '13px',
  '--vscode-font-weight': 'normal',
  '--vscode-editor-font-family': '"Droid Sans Mono", "monospace", monospace',
};

const DARK: Record<string, string> = {
  ...COMMON,
  '--vscode-editor-background': '#1f1f1f',
  '--vscode-foreground': '#cccccc',
  '--vscode-descriptionForeground': '#9d9d9d',
  '--vscode-badge-background': '#616161',
  '--vscode-badge-foreground': '#f8f8f8',
  '--vscode-button-background': '#0078d4',
  '--vscode-button-foreground': '#ffffff',
  '--vscode-button-border': '#ffffff12',
  '--vscode-button-hoverBackground': '#026ec1',
  '--vscode-button-secondaryBackground': '#313131',
  '--vscode-button-secondaryForeground': '#cccccc',
  '--vscode-button-secondaryHoverBackground': '#3c3c3c',
  '--vscode-charts-blue': '#3794ff',
  '--vscode-charts-green': '#89d185',
  '--vscode-charts-lines': '#cccccc80',
  '--vscode-charts-orange': '#d18616',
  '--vscode-charts-purple': '#b180d7',
  '--vscode-charts-red': '#f14c4c',
  '--vscode-charts-yellow': '#cca700',
  '--vscode-debugTokenExpression-boolean': '#4e94ce',
  '--vscode-debugTokenExpression-number': '#b5cea8',
  '--vscode-debugTokenExpression-string': '#ce9178',
  '--vscode-editor-findMatchHighlightBackground': '#ea5c0055',
  '--vscode-editorWarning-foreground': '#cca700',
  '--vscode-editorWidget-background': '#202020',
  '--vscode-errorForeground': '#f85149',
  '--vscode-focusBorder': '#0078d4',
  '--vscode-icon-foreground': '#cccccc',
  '--vscode-input-background': '#313131',
  '--vscode-input-border': '#3c3c3c',
  '--vscode-input-foreground': '#cccccc',
  '--vscode-input-placeholderForeground': '#989898',
  '--vscode-inputValidation-errorBackground': '#5a1d1d',
  '--vscode-inputValidation-errorBorder': '#be1100',
  '--vscode-inputValidation-warningBackground': '#352a05',
  '--vscode-inputValidation-warningBorder': '#b89500',
  '--vscode-list-hoverBackground': '#2a2d2e',
  '--vscode-panel-border': '#2b2b2b',
  '--vscode-progressBar-background': '#0078d4',
  '--vscode-scrollbarSlider-background': '#79797966',
  '--vscode-textCodeBlock-background': '#2b2b2b',
  '--vscode-textLink-activeForeground': '#4daafc',
  '--vscode-textLink-foreground': '#4daafc',
  '--vscode-toolbar-hoverBackground': '#5a5d5e50',
  '--vscode-tree-indentGuidesStroke': '#585858',
  '--vscode-tree-tableOddRowsBackground': '#cccccc0a',
};

const LIGHT: Record<string, string> = {
  ...COMMON,
  '--vscode-editor-background': '#ffffff',
  '--vscode-foreground': '#3b3b3b',
  '--vscode-descriptionForeground': '#717171',
  '--vscode-badge-background': '#cccccc',
  '--vscode-badge-foreground': '#3b3b3b',
  '--vscode-button-background': '#005fb8',
  '--vscode-button-foreground': '#ffffff',
  '--vscode-button-border': '#0000001a',
  '--vscode-button-hoverBackground': '#0258a8',
  '--vscode-button-secondaryBackground': '#e5e5e5',
  '--vscode-button-secondaryForeground': '#3b3b3b',
  '--vscode-button-secondaryHoverBackground': '#cccccc',
  '--vscode-charts-blue': '#1a85ff',
  '--vscode-charts-green': '#388a34',
  '--vscode-charts-lines': '#61616180',
  '--vscode-charts-orange': '#d18616',
  '--vscode-charts-purple': '#652d90',
  '--vscode-charts-red': '#e51400',
  '--vscode-charts-yellow': '#bf8803',
  '--vscode-debugTokenExpression-boolean': '#0000ff',
  '--vscode-debugTokenExpression-number': '#098658',
  '--vscode-debugTokenExpression-string': '#a31515',
  '--vscode-editor-findMatchHighlightBackground': '#ea5c0055',
  '--vscode-editorWarning-foreground': '#bf8803',
  '--vscode-editorWidget-background': '#f8f8f8',
  '--vscode-errorForeground': '#f85149',
  '--vscode-focusBorder': '#005fb8',
  '--vscode-icon-foreground': '#3b3b3b',
  '--vscode-input-background': '#ffffff',
  '--vscode-input-border': '#cecece',
  '--vscode-input-foreground': '#3b3b3b',
  '--vscode-input-placeholderForeground': '#767676',
  '--vscode-inputValidation-errorBackground': '#f2dede',
  '--vscode-inputValidation-errorBorder': '#be1100',
  '--vscode-inputValidation-warningBackground': '#f6f5d2',
  '--vscode-inputValidation-warningBorder': '#bf8803',
  '--vscode-list-hoverBackground': '#f2f2f2',
  '--vscode-panel-border': '#e5e5e5',
  '--vscode-progressBar-background': '#005fb8',
  '--vscode-scrollbarSlider-background': '#64646466',
  '--vscode-textCodeBlock-background': '#dcdcdc66',
  '--vscode-textLink-activeForeground': '#005fb8',
  '--vscode-textLink-foreground': '#005fb8',
  '--vscode-toolbar-hoverBackground': '#b8b8b850',
  '--vscode-tree-indentGuidesStroke': '#a9a9a9',
  '--vscode-tree-tableOddRowsBackground': '#3b3b3b0a',
};

// ---- View models ------------------------------------------------------------------------------

const WORKSPACE = 'file:///home/user/zoo/models/';
const uri = (relative: string): string => WORKSPACE + relative;
const SELF = uri('zdyd8z/model.pt');
const PARENT = uri('b7t8d/model_best.pth');
const GRANDPARENT = uri('8j4/weights.pth');
const CHILD = uri('efrqsk/checkpoints/model.ckpt');
const XSS = '<img src=x onerror="window.__xss=1">';

/** zdyd8z/model.pt's place in the demo zoo (test/fixtures/demo/truth.json). */
const LINEAGE: CheckpointLineage = {
  node: { uri: SELF, label: 'zdyd8z/model.pt', format: 'pytorch-zip', sizeBytes: 104583, parameters: 25733, family: 0 },
  parent: {
    parent: PARENT,
    child: SELF,
    relation: 'finetune',
    confidence: 0.94,
    evidence: 'relative weight distance 0.191 over 5 shared layers; 1 replaced (head.weight)',
  },
  ancestors: [
    {
      parent: GRANDPARENT,
      child: PARENT,
      relation: 'finetune',
      confidence: 0.97,
      evidence: 'relative weight distance 0.207 over 4 shared layers; 2 replaced (head.weight, head.bias)',
    },
  ],
  descendants: [{ parent: SELF, child: CHILD, relation: 'fp16', confidence: 1, evidence: 'F16 copy: 100.0% of sampled values equal the source rounded to F16' }],
  conflicts: [
    {
      child: SELF,
      declaredParent: uri('24sw/model.pt'),
      message: '/home/user/zoo/models/zdyd8z/model.pt declares /home/user/zoo/models/24sw/model.pt as its parent (/home/user/zoo/models/zdyd8z/config.json), but their weights are unrelated',
      source: uri('zdyd8z/config.json'),
    },
  ],
};

/**
 * zdyd8z/model.pt against b7t8d/model_best.pth as the server's CompareRequest reports it (numbers
 * from the engine's compareFingerprints on the two demo files): head.weight was re-initialised,
 * so it is replaced and not among the compared layers.
 */
const COMPARISON: CheckpointComparison = {
  a: SELF,
  b: PARENT,
  related: true,
  relativeDistance: 0.1909,
  layers: [
    { name: 'fc1.weight', parameters: 25088, relativeDistance: 0.2087, cosine: 0.9792 },
    { name: 'fc1.bias', parameters: 32, relativeDistance: 0.1849, cosine: 0.984 },
    { name: 'fc2.weight', parameters: 512, relativeDistance: 0.1335, cosine: 0.9919 },
    { name: 'fc2.bias', parameters: 16, relativeDistance: 0.1218, cosine: 0.993 },
    { name: 'head.bias', parameters: 5, relativeDistance: 0.9928, cosine: 0.6135 },
  ],
  replaced: ['head.weight'],
};

function inspectResult(report: CheckpointReport): { report: CheckpointReport; markdown: string } {
  return { report, markdown: `# ${path.basename(report.path)}` };
}

// ---- Harness ----------------------------------------------------------------------------------

let browser: Browser;
let pageUrl: string;
const temp = makeTempDir('checkpoint-webview-');

before(async () => {
  if (skip) return;
  const bundle = await build({
    entryPoints: [path.join(ROOT, 'client', 'src', 'webview', 'checkpoint.ts')],
    bundle: true,
    platform: 'browser',
    format: 'iife',
    target: 'es2022',
    write: false,
    logLevel: 'silent',
  });
  writeFileSync(path.join(temp.dir, 'checkpoint.js'), bundle.outputFiles[0]!.text);
  writeFileSync(path.join(temp.dir, 'checkpoint.css'), readFileSync(path.join(ROOT, 'media', 'checkpoint.css')));
  writeFileSync(
    path.join(temp.dir, 'stub.js'),
    `window.__posted = [];
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
// Like VS Code, the state survives the page being reloaded (here in sessionStorage).
window.acquireVsCodeApi = () => ({
  postMessage: (message) => window.__posted.push(JSON.parse(JSON.stringify(message))),
  getState: () => JSON.parse(sessionStorage.getItem('state') || 'null') || undefined,
  setState: (value) => sessionStorage.setItem('state', JSON.stringify(value)),
});
`,
  );
  // The page the extension serves, with file: standing in for the webview's cspSource.
  writeFileSync(
    path.join(temp.dir, 'index.html'),
    `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src file:; script-src 'nonce-test';">
  <meta name="viewport" content="width=device-width, initial-scale=1.0">
  <link rel="stylesheet" href="checkpoint.css">
  <title>Checkpoint</title>
</head>
<body>
  <main id="app"></main>
  <script nonce="test" src="stub.js"></script>
  <script nonce="test" src="checkpoint.js"></script>
</body>
</html>`,
  );
  pageUrl = pathToFileURL(path.join(temp.dir, 'index.html')).href;
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
});

after(async () => {
  await browser?.close();
  temp.cleanup();
});

interface Harness {
  readonly page: Page;
  readonly errors: string[];
  posted(): Promise<CheckpointWebviewMessage[]>;
  send(message: CheckpointHostMessage): Promise<void>;
  theme(theme: 'dark' | 'light'): Promise<void>;
  /** Fails on script errors and on anything the Content-Security-Policy blocked. */
  assertClean(): Promise<void>;
  close(): Promise<void>;
}

async function open(theme: 'dark' | 'light' = 'dark', height = 900): Promise<Harness> {
  const page = await browser.newPage({ viewport: { width: 1100, height } });
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  await page.goto(pageUrl);
  const harness: Harness = {
    page,
    errors,
    posted: () => page.evaluate(() => (globalThis as unknown as { __posted: CheckpointWebviewMessage[] }).__posted),
    // As JSON text: Playwright's own serialisation of 10k-tensor models takes seconds.
    send: (message) => page.evaluate((json) => (globalThis as unknown as { postMessage(message: unknown, origin: string): void }).postMessage(JSON.parse(json), '*'), JSON.stringify(message)),
    theme: (name) =>
      page.evaluate(
        ([variables, className]) => {
          const doc = (globalThis as unknown as { document: { documentElement: { style: { setProperty(k: string, v: string): void } }; body: { className: string } } }).document;
          for (const [key, value] of Object.entries(variables)) doc.documentElement.style.setProperty(key, value);
          doc.body.className = className;
        },
        [name === 'dark' ? DARK : LIGHT, name === 'dark' ? 'vscode-dark' : 'vscode-light'] as const,
      ),
    assertClean: async () => {
      const violations = await page.evaluate(() => (globalThis as unknown as { __violations: string[] }).__violations);
      assert.deepEqual(violations, [], 'Content-Security-Policy violations');
      assert.deepEqual(errors, [], 'script errors');
    },
    close: () => page.close(),
  };
  await harness.theme(theme);
  return harness;
}

async function computed(page: Page, selector: string, property: string): Promise<string> {
  return page.locator(selector).first().evaluate(
    (element, name) => (globalThis as unknown as { getComputedStyle(e: unknown): { getPropertyValue(p: string): string } }).getComputedStyle(element).getPropertyValue(name),
    property,
  );
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(ARTIFACTS, name), fullPage: true });
}

// ---- Tests ------------------------------------------------------------------------------------

describe('checkpoint viewer webview', { skip }, () => {
  test('shows summary, lineage, change chart and tensors of a real checkpoint; links post messages', { timeout: 90_000 }, async () => {
    const report = await inspectCheckpoint(path.join(DEMO, 'zdyd8z', 'model.pt'));
    assert.equal(report.error, undefined);
    const view = await open('dark');
    const { page } = view;
    assert.deepEqual(await view.posted(), [{ type: 'ready' }], 'the page says ready first');

    // The model arrives first, lineage and comparison later.
    await view.send({ type: 'model', model: { inspect: inspectResult(report) }, lineagePending: true });
    await page.locator('.file-name').waitFor();
    assert.equal(await page.locator('.file-name').textContent(), 'model.pt');
    assert.match((await page.locator('.stat-format dd').textContent()) ?? '', /PyTorch \(zip\)/);
    const parameters = (await page.locator('.stat-parameters').textContent()) ?? '';
    assert.ok(parameters.includes(report.parameterCount.toLocaleString('en-US')), parameters);
    assert.ok(parameters.includes('25.7K'), parameters);
    assert.match((await page.locator('.stat-dtypes').textContent()) ?? '', /F32/);
    assert.match((await page.locator('.lineage').textContent()) ?? '', /Looking up/);

    await view.send({ type: 'lineage', lineage: LINEAGE, comparisonPending: true });
    await page.locator('.parent-link').waitFor();
    assert.match((await page.locator('.change').textContent()) ?? '', /Comparing/);
    await view.send({ type: 'lineage', lineage: LINEAGE, parentComparison: COMPARISON });
    await page.locator('.bar-chart').waitFor();

    // Lineage: parent with relation, confidence and evidence; ancestry root first; children; conflicts.
    assert.equal(await page.locator('.parent-link').textContent(), 'b7t8d/model_best.pth');
    assert.match((await page.locator('.parent-line').textContent()) ?? '', /fine-tuned.*94%/);
    assert.match((await page.locator('.lineage .evidence').textContent()) ?? '', /relative weight distance 0\.191/);
    assert.deepEqual(await page.locator('.ancestor-link').allTextContents(), ['8j4/weights.pth', 'b7t8d/model_best.pth']);
    assert.deepEqual(await page.locator('.child-link').allTextContents(), ['efrqsk/checkpoints/model.ckpt']);
    assert.match((await page.locator('.descendants').textContent()) ?? '', /half precision/);
    assert.match((await page.locator('.conflicts').textContent()) ?? '', /their weights are unrelated/);

    // Tensors: one row per tensor; the filter narrows them and marks the match.
    const rows = page.locator('.tensor-table tbody tr');
    assert.equal(await rows.count(), report.tensors.length);
    assert.deepEqual(await page.locator('.tensor-table tbody .col-name').allTextContents(), report.tensors.map((t) => t.name));
    assert.equal(await page.locator('.tensor-table tbody tr').first().locator('.col-shape').textContent(), '32 × 784');
    await page.locator('input.filter').fill('fc1');
    assert.deepEqual(await page.locator('.tensor-table tbody .col-name').allTextContents(), ['fc1.weight', 'fc1.bias']);
    assert.deepEqual(await page.locator('.tensor-table tbody mark').allTextContents(), ['fc1', 'fc1']);
    await page.locator('input.filter').fill('no-such-tensor');
    assert.equal(await rows.count(), 0);
    assert.match((await page.locator('.table-footer').textContent()) ?? '', /No tensor name contains/);
    await page.locator('input.filter').fill('');
    assert.equal(await rows.count(), report.tensors.length);
    await page.locator('th.col-parameters button').click();
    assert.equal(await page.locator('.tensor-table tbody .col-name').first().textContent(), 'fc1.weight');
    assert.equal(await page.locator('th.col-parameters').getAttribute('aria-sort'), 'descending');

    // Chart: one bar per compared layer plus the replaced one, which is marked.
    const compared = new Set([...COMPARISON.layers.map((layer) => layer.name), ...COMPARISON.replaced]);
    assert.equal(await page.locator('.bar-chart .row').count(), compared.size);
    assert.equal(await page.locator('.bar-chart rect.bar').count(), compared.size);
    const replacedRows = page.locator('.bar-chart .row.replaced');
    assert.deepEqual(await replacedRows.evaluateAll((rowsFound) => rowsFound.map((row) => (row as { getAttribute(n: string): string | null }).getAttribute('data-layer'))), ['head.weight']);
    assert.equal(await page.locator('.bar-chart .row.replaced rect.bar.replaced').count(), 1);
    assert.match((await page.locator('.bar-chart .row.replaced text.value').textContent()) ?? '', /replaced/);
    assert.deepEqual(
      await page.locator('.bar-chart .row').evaluateAll((found) => found.map((row) => (row as { getAttribute(n: string): string | null }).getAttribute('data-layer'))),
      report.tensors.map((t) => t.name),
      'bars follow the file order',
    );
    assert.match((await page.locator('.chart-summary').textContent()) ?? '', /19\.1%.*5 layers compared.*1 replaced/);
    const widths = await page.locator('.bar-chart rect.bar').evaluateAll((bars) => bars.map((bar) => Number((bar as { getAttribute(n: string): string | null }).getAttribute('width'))));
    assert.ok(widths.every((width) => width > 0), `every bar is drawn: ${widths.join(', ')}`);
    await shot(page, 'checkpoint-dark.png');

    // Clicking a bar filters the tensor table to that layer.
    await page.locator('.bar-chart .row[data-layer="fc2.weight"]').click();
    assert.equal(await page.locator('input.filter').inputValue(), 'fc2.weight');
    assert.deepEqual(await page.locator('.tensor-table tbody .col-name').allTextContents(), ['fc2.weight']);

    // Links and buttons post messages with the URIs they show.
    await page.locator('.parent-link').click();
    await page.locator('.parent-link').click({ modifiers: ['Control'] });
    await page.locator(`.parent-line .graph-link`).click();
    await page.locator('.child-link').click();
    await page.locator('button.compare-with-parent').click();
    await page.locator('button.show-in-graph').click();
    assert.deepEqual((await view.posted()).slice(1), [
      { type: 'open', uri: PARENT },
      { type: 'open', uri: PARENT, beside: true },
      { type: 'showInGraph', uri: PARENT },
      { type: 'open', uri: CHILD },
      { type: 'compareWithParent' },
      { type: 'showInGraph', uri: SELF },
    ]);

    // The light theme's variables change the colours; nothing else does.
    const dark = {
      background: await computed(page, 'body', 'background-color'),
      text: await computed(page, 'body', 'color'),
      bar: await computed(page, '.bar-chart rect.bar:not(.replaced)', 'fill'),
      link: await computed(page, '.parent-link', 'color'),
    };
    assert.deepEqual(dark, { background: 'rgb(31, 31, 31)', text: 'rgb(204, 204, 204)', bar: 'rgb(55, 148, 255)', link: 'rgb(77, 170, 252)' });
    await view.theme('light');
    await page.locator('input.filter').fill('');
    const light = {
      background: await computed(page, 'body', 'background-color'),
      text: await computed(page, 'body', 'color'),
      bar: await computed(page, '.bar-chart rect.bar:not(.replaced)', 'fill'),
      link: await computed(page, '.parent-link', 'color'),
    };
    assert.deepEqual(light, { background: 'rgb(255, 255, 255)', text: 'rgb(59, 59, 59)', bar: 'rgb(26, 133, 255)', link: 'rgb(0, 95, 184)' });
    await page.evaluate(() => (globalThis as unknown as { scrollTo(x: number, y: number): void }).scrollTo(0, 0));
    await shot(page, 'checkpoint-light.png');

    // A narrow editor: the chart is redrawn to the new width.
    const wide = Number(await page.locator('.bar-chart').getAttribute('width'));
    await page.setViewportSize({ width: 560, height: 900 });
    await page.waitForFunction(
      (before) => Number((globalThis as unknown as { document: { querySelector(s: string): { getAttribute(n: string): string } } }).document.querySelector('.bar-chart').getAttribute('width')) < before,
      wide,
    );
    await shot(page, 'checkpoint-narrow.png');

    await view.assertClean();
    await view.close();
  });

  test('filter, sort, chart order and scroll survive the webview being reloaded', { timeout: 60_000 }, async () => {
    const report = await inspectCheckpoint(path.join(DEMO, 'zdyd8z', 'model.pt'));
    const view = await open('dark', 600);
    const { page } = view;
    const model: CheckpointHostMessage = { type: 'model', model: { inspect: inspectResult(report), lineage: LINEAGE, parentComparison: COMPARISON } };
    await view.send(model);
    await page.locator('.bar-chart').waitFor();
    await page.locator('input.filter').fill('weight');
    await page.locator('th.col-parameters button').click();
    await page.locator('.segment[data-order="change"]').click();
    assert.deepEqual(
      await page.locator('.bar-chart .row').evaluateAll((found) => found.map((row) => (row as { getAttribute(n: string): string | null }).getAttribute('data-layer'))),
      ['head.weight', 'head.bias', 'fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias'],
      'largest change first, replaced layers at the top',
    );
    await page.evaluate(() => (globalThis as unknown as { scrollTo(x: number, y: number): void }).scrollTo(0, 400));
    await page.waitForTimeout(400);

    // VS Code drops a hidden webview (retainContextWhenHidden: false) and loads it again.
    await page.reload();
    await view.theme('dark');
    await view.send(model);
    await page.locator('.bar-chart').waitFor();
    assert.equal(await page.locator('input.filter').inputValue(), 'weight');
    assert.deepEqual(await page.locator('.tensor-table tbody .col-name').allTextContents(), ['fc1.weight', 'fc2.weight', 'head.weight']);
    assert.equal(await page.locator('.segment[data-order="change"]').getAttribute('aria-pressed'), 'true');
    assert.equal(await page.evaluate(() => (globalThis as unknown as { scrollY: number }).scrollY), 400);
    await view.assertClean();
    await view.close();
  });

  test('an unreadable file shows why, prominently, and no tensor sections', { timeout: 60_000 }, async () => {
    const broken = path.join(temp.dir, 'broken.pt');
    writeFileSync(broken, 'this is not a checkpoint, only text with a .pt name\n');
    const report = await inspectCheckpoint(broken);
    assert.ok(report.error, 'the engine reports an error');
    const view = await open('dark', 520);
    const { page } = view;
    await view.send({
      type: 'model',
      model: { inspect: inspectResult(report), lineage: { ancestors: [], descendants: [], conflicts: [] } },
    });
    await page.locator('.error-panel').waitFor();
    assert.equal(await page.locator('.error-panel').getAttribute('role'), 'alert');
    assert.equal(await page.locator('.error-title').textContent(), 'This file could not be read');
    assert.equal(await page.locator('.error-reason').textContent(), report.error);
    assert.equal(await page.locator('.stat-format dd').textContent(), 'Unreadable');
    assert.equal(await page.locator('.tensor-table').count(), 0);
    assert.equal(await page.locator('.bar-chart').count(), 0);
    await shot(page, 'checkpoint-unreadable.png');

    // The host failing altogether (no language server) is shown the same way.
    await view.send({ type: 'failed', message: 'Neural Lineage server is not running' });
    await page.locator('.error-title', { hasText: 'could not be inspected' }).waitFor();
    assert.equal(await page.locator('.error-reason').textContent(), 'Neural Lineage server is not running');
    await view.assertClean();
    await view.close();
  });

  test('markup in tensor names and metadata is shown as text', { timeout: 60_000 }, async () => {
    const real = await inspectCheckpoint(path.join(DEMO, 'pxhe', 'checkpoints', 'model.ckpt'));
    assert.equal(real.error, undefined);
    const report: CheckpointReport = {
      ...real,
      tensors: [...real.tensors, { name: XSS, dtype: 'F32', shape: [4] }],
      metadata: { ...real.metadata, note: XSS, [XSS]: 'a key with markup', long: 'x'.repeat(1200) },
      warnings: [...real.warnings, XSS],
    };
    const view = await open('dark', 1000);
    const { page } = view;
    await view.send({ type: 'model', model: { inspect: inspectResult(report), lineage: { ancestors: [], descendants: [], conflicts: [] } } });
    await page.locator('.tensor-table').waitFor();

    assert.equal(await page.locator('img').count(), 0, 'no element was created from file content');
    assert.equal(await page.evaluate(() => (globalThis as unknown as { __xss?: number }).__xss), undefined);
    assert.equal(await page.locator('.tensor-table tbody .col-name').last().textContent(), XSS);
    assert.equal(await page.locator('.metadata-table tr', { hasText: 'note' }).locator('.meta-value').textContent(), XSS);
    assert.equal(await page.locator('.metadata-table .meta-key', { hasText: '<img' }).textContent(), XSS);
    assert.ok(((await page.locator('.warning-panel').textContent()) ?? '').includes(XSS));
    // Nested declared metadata is flattened into dotted keys; long values are cut until asked.
    assert.equal(await page.locator('.metadata-table tr', { hasText: 'hyper_parameters.optimizer' }).locator('.meta-value').textContent(), 'sgd');
    assert.match((await page.locator('.metadata-table tr', { hasText: 'long' }).locator('.meta-value').textContent()) ?? '', /^x{400}…Show all 1,200 characters$/);
    assert.match((await page.locator('.parent-line, .no-parent').first().textContent()) ?? '', /None found/);
    await shot(page, 'checkpoint-metadata.png');
    await view.assertClean();
    await view.close();
  });

  test('12,345 tensors: only the rows in view are rendered, and the filter searches all of them', { timeout: 90_000 }, async () => {
    const count = 12_345;
    const kinds = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.down_proj'];
    const tensors = Array.from({ length: count }, (_, i) => ({ name: `model.layers.${Math.floor(i / 5)}.${kinds[i % 5]}.weight`, dtype: 'BF16' as const, shape: [64, 64] }));
    const report: CheckpointReport = {
      path: '/models/big/model-00001-of-00002.safetensors',
      format: 'safetensors',
      tensorCount: count,
      parameterCount: count * 4096,
      byteSize: count * 4096 * 2,
      dtypes: { BF16: { tensors: count, parameters: count * 4096 } },
      tensors,
      metadata: { format: 'pt' },
      warnings: [],
    };
    const view = await open('light', 700);
    const { page } = view;
    await view.send({ type: 'model', model: { inspect: inspectResult(report) } });
    await page.locator('.tensor-table').waitFor();
    const rows = page.locator('.tensor-table tbody tr:not(.spacer)');
    const names = page.locator('.tensor-table tbody tr:not(.spacer) .col-name');
    assert.equal(await page.locator('.tensor-table').getAttribute('aria-rowcount'), String(count + 1));
    const rendered = await rows.count();
    assert.ok(rendered > 0 && rendered <= 200, `${rendered} rows rendered`);
    assert.equal(await names.first().textContent(), tensors[0]!.name);
    assert.equal(await page.locator('.stat-parameters dd').first().textContent(), '50.57M');

    // Scrolled to the end, the last tensors are there and the first are gone.
    const scrollTo = (fraction: number): Promise<void> =>
      page.evaluate((f) => {
        const scope = globalThis as unknown as { scrollTo(x: number, y: number): void; document: { documentElement: { scrollHeight: number } } };
        scope.scrollTo(0, f * scope.document.documentElement.scrollHeight);
      }, fraction);
    await scrollTo(1);
    await page.locator('.tensor-table tbody .col-name', { hasText: tensors[count - 1]!.name }).waitFor();
    assert.ok((await rows.count()) <= 200);
    assert.equal(await page.locator('.tensor-table tbody .col-name', { hasText: /^model\.layers\.0\./ }).count(), 0);
    await scrollTo(0.5);
    await page.waitForFunction(() => {
      const first = (globalThis as unknown as { document: { querySelector(s: string): { getAttribute(n: string): string | null } | null } }).document.querySelector('.tensor-table tbody tr:not(.spacer)');
      return Number(first?.getAttribute('aria-rowindex')) > 3000;
    });
    const middle = Number(await rows.first().getAttribute('aria-rowindex'));
    assert.ok(middle > 3000 && middle < 9000, `rendered from row ${middle}`);
    await page.screenshot({ path: path.join(ARTIFACTS, 'checkpoint-large.png') });

    // The filter searches all tensors, not only the rendered ones.
    await page.locator('input.filter').fill('layers.2468.');
    assert.deepEqual(await names.allTextContents(), tensors.filter((t) => t.name.includes('layers.2468.')).map((t) => t.name));
    assert.match((await page.locator('.tensors .count').textContent()) ?? '', /5 of 12,345 match/);
    await page.locator('input.filter').fill('down_proj');
    assert.equal(await page.locator('.tensor-table').getAttribute('aria-rowcount'), String(count / 5 + 1));
    await view.assertClean();
    await view.close();
  });
});
