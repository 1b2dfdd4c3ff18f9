/**
 * Runs a webview script in headless Chromium the way VS Code hosts it: the page has the same
 * Content-Security-Policy (scripts by nonce, styles from the resource origin only), a stub
 * `acquireVsCodeApi` that records posted messages and keeps its state in sessionStorage (so it
 * survives a reload, as VS Code's webview state does), and theme variables set on <html> with the
 * `vscode-light` / `vscode-dark` body class.
 *
 * Pages are written to a temporary folder and served from https://webview.test/ through
 * Playwright's request routing; nothing leaves the machine.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { REPO_ROOT, makeTempDir } from '../helpers';

// Types only: esbuild and playwright-core are required from the repository root when needed.
import type { Browser, BrowserContext, Page } from 'playwright-core';

/** The repository root, also when this file runs from a bundle outside out/test/. */
export const ROOT = existsSync(path.join(REPO_ROOT, 'client', 'src', 'webview')) ? REPO_ROOT : process.cwd();
export const ARTIFACTS = path.join(ROOT, 'test', '.artifacts');
export const ORIGIN = 'https://webview.test';
export const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';

/** Resolves packages from the repository, wherever this file was compiled or bundled to. */
const requireFromRoot = createRequire(path.join(ROOT, 'package.json'));

const NONCE = 'dGVzdC1ub25jZS0xMjM0NQ==';

export type ThemeKind = 'light' | 'dark' | 'high-contrast';

/** A subset of VS Code's Light Modern, Dark Modern and Dark High Contrast colours, enough for the graph. */
export const THEMES: Record<ThemeKind, Record<string, string>> = {
  light: {
    'editor-background': '#ffffff',
    foreground: '#3b3b3b',
    descriptionForeground: '#717171',
    focusBorder: '#005fb8',
    errorForeground: '#e51400',
    'editorWidget-background': '#f8f8f8',
    'editorWidget-border': '#c8c8c8',
    'widget-shadow': '#00000029',
    'panel-border': '#e5e5e5',
    'dropdown-background': '#ffffff',
    'dropdown-foreground': '#3b3b3b',
    'dropdown-border': '#cecece',
    'button-background': '#005fb8',
    'button-foreground': '#ffffff',
    'button-hoverBackground': '#0258a8',
    'button-border': '#0000001a',
    'button-secondaryBackground': '#e5e5e5',
    'button-secondaryForeground': '#3b3b3b',
    'button-secondaryHoverBackground': '#cccccc',
    'charts-foreground': '#616161',
    'charts-lines': '#61616180',
    'charts-red': '#e51400',
    'charts-blue': '#1a85ff',
    'charts-yellow': '#bf8803',
    'charts-orange': '#d18616',
    'charts-green': '#388a34',
    'charts-purple': '#652d90',
    'editorHoverWidget-background': '#f8f8f8',
    'editorHoverWidget-foreground': '#3b3b3b',
    'editorHoverWidget-border': '#c8c8c8',
    'menu-background': '#ffffff',
    'menu-foreground': '#3b3b3b',
    'menu-selectionBackground': '#005fb8',
    'menu-selectionForeground': '#ffffff',
    'menu-border': '#cecece',
    'inputValidation-errorBackground': '#f2dede',
    'progressBar-background': '#005fb8',
    'editorWarning-foreground': '#bf8803',
  },
  dark: {
    'editor-background': '#1f1f1f',
    foreground: '#cccccc',
    descriptionForeground: '#9d9d9d',
    focusBorder: '#0078d4',
    errorForeground: '#f85149',
    'editorWidget-background': '#252526',
    'editorWidget-border': '#454545',
    'widget-shadow': '#0000005c',
    'panel-border': '#2b2b2b',
    'dropdown-background': '#313131',
    'dropdown-foreground': '#cccccc',
    'dropdown-border': '#3c3c3c',
    'button-background': '#0078d4',
    'button-foreground': '#ffffff',
    'button-hoverBackground': '#026ec1',
    'button-border': '#ffffff12',
    'button-secondaryBackground': '#313131',
    'button-secondaryForeground': '#cccccc',
    'button-secondaryHoverBackground': '#3c3c3c',
    'charts-foreground': '#cccccc',
    'charts-lines': '#cccccc80',
    'charts-red': '#f14c4c',
    'charts-blue': '#3794ff',
    'charts-yellow': '#cca700',
    'charts-orange': '#d18616',
    'charts-green': '#89d185',
    'charts-purple': '#b180d7',
    'editorHoverWidget-background': '#202020',
    'editorHoverWidget-foreground': '#cccccc',
    'editorHoverWidget-border': '#454545',
    'menu-background': '#1f1f1f',
    'menu-foreground': '#cccccc',
    'menu-selectionBackground': '#0078d4',
    'menu-selectionForeground': '#ffffff',
    'menu-border': '#454545',
    'inputValidation-errorBackground': '#5a1d1d',
    'progressBar-background': '#0078d4',
    'editorWarning-foreground': '#cca700',
  },
  'high-contrast': {
    'editor-background': '#000000',
    foreground: '#ffffff',
    descriptionForeground: '#ffffffb3',
    focusBorder: '#f38518',
    contrastBorder: '#6fc3df',
    contrastActiveBorder: '#f38518',
    errorForeground: '#f48771',
    'editorWidget-background': '#0c141f',
    'editorWidget-border': '#6fc3df',
    'widget-shadow': '#00000000',
    'panel-border': '#6fc3df',
    'dropdown-background': '#000000',
    'dropdown-foreground': '#ffffff',
    'dropdown-border': '#6fc3df',
    'button-background': '#000000',
    'button-foreground': '#ffffff',
    'button-border': '#6fc3df',
    'button-secondaryBackground': '#000000',
    'button-secondaryForeground': '#ffffff',
    'charts-foreground': '#ffffff',
    'charts-lines': '#ffffff80',
    'charts-red': '#f14c4c',
    'charts-blue': '#3794ff',
    'charts-yellow': '#cca700',
    'charts-orange': '#d18616',
    'charts-green': '#89d185',
    'charts-purple': '#b180d7',
    'editorHoverWidget-background': '#0c141f',
    'editorHoverWidget-foreground': '#ffffff',
    'editorHoverWidget-border': '#6fc3df',
    'menu-background': '#000000',
    'menu-foreground': '#ffffff',
    'menu-selectionBackground': '#0f4a85',
    'menu-selectionForeground': '#ffffff',
    'menu-border': '#6fc3df',
    'inputValidation-errorBackground': '#000000',
    'progressBar-background': '#6fc3df',
    'editorWarning-foreground': '#cca700',
  },
};

const FONT_VARIABLES: Record<string, string> = {
  'font-family': 'system-ui, "Ubuntu", "Droid Sans", sans-serif',
  'font-size': '13px',
  'font-weight': 'normal',
  'editor-font-family': '"Droid Sans Mono", monospace',
};

/** Runs before the webview script: the stand-in for what VS Code injects into a webview. */
const STUB = `
(() => {
  window.__posted = [];
  window.__cspViolations = [];
  document.addEventListener('securitypolicyviolation', (event) => {
    window.__cspViolations.push(event.violatedDirective + ' ' + event.blockedURI);
  });
  let acquired = false;
  window.acquireVsCodeApi = () => {
    if (acquired) throw new Error('acquireVsCodeApi may only be called once');
    acquired = true;
    return {
      postMessage: (message) => { window.__posted.push(JSON.parse(JSON.stringify(message))); },
      getState: () => {
        const saved = sessionStorage.getItem('vscode-state');
        return saved === null ? undefined : JSON.parse(saved);
      },
      setState: (state) => { sessionStorage.setItem('vscode-state', JSON.stringify(state)); return state; },
    };
  };
  window.__applyTheme = (kind, colours, fonts) => {
    const root = document.documentElement;
    for (const name of [...root.style]) if (name.startsWith('--vscode-')) root.style.removeProperty(name);
    for (const [name, value] of Object.entries({ ...fonts, ...colours })) root.style.setProperty('--vscode-' + name, value);
    document.body.classList.remove('vscode-light', 'vscode-dark', 'vscode-high-contrast');
    document.body.classList.add('vscode-' + kind);
    document.body.dataset.vscodeThemeKind = 'vscode-' + kind;
  };
  const theme = sessionStorage.getItem('test-theme') || 'dark';
  const colours = sessionStorage.getItem('test-theme-colours');
  const fonts = sessionStorage.getItem('test-fonts');
  window.__applyTheme(theme, colours ? JSON.parse(colours) : ${JSON.stringify(THEMES.dark)}, fonts ? JSON.parse(fonts) : ${JSON.stringify(FONT_VARIABLES)});
})();
`;

function page(title: string, script: string, style: string): string {
  const csp = `default-src 'none'; img-src ${ORIGIN} data:; style-src ${ORIGIN}; script-src 'nonce-${NONCE}';`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <meta http-equiv="Content-Security-Policy" content="${csp}">
  <link rel="stylesheet" href="${ORIGIN}/${style}">
  <title>${title}</title>
</head>
<body>
  <script nonce="${NONCE}">${STUB}</script>
  <script nonce="${NONCE}" src="${ORIGIN}/${script}"></script>
</body>
</html>`;
}

/** Bundles a webview entry point the way esbuild.js does, in memory. */
export async function bundleWebview(entry: string): Promise<string> {
  const esbuild = requireFromRoot('esbuild') as typeof import('esbuild');
  const result = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: [entry],
    bundle: true,
    platform: 'browser',
    format: 'iife',
    target: 'es2022',
    write: false,
    logLevel: 'silent',
  });
  const output = result.outputFiles[0];
  if (!output) throw new Error(`esbuild produced no output for ${entry}`);
  return output.text;
}

export interface WebviewHarness {
  readonly page: Page;
  readonly dir: string;
  /** Navigates (again) to the page and waits for the webview's `ready`. */
  load(): Promise<void>;
  /** Switches the theme as VS Code does (variables on <html>, class on <body>); kept across reloads. */
  setTheme(kind: ThemeKind): Promise<void>;
  /** Posts a message as the extension host would, and resolves once the webview has handled it. */
  send(message: unknown): Promise<void>;
  /** Waits for running CSS transitions (the focus fade) to end. */
  settle(): Promise<void>;
  /** Messages the webview posted since the page loaded. */
  posted(): Promise<{ type: string; [key: string]: unknown }[]>;
  close(): Promise<void>;
}

/** Writes the page, its script and the CSS into a temp folder and opens it in Chromium. */
export async function openWebview(options: { entry: string; css: string; title: string }): Promise<WebviewHarness> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium was not found at ${CHROMIUM}. The webview tests drive a headless Chromium: install it ` +
        `(Debian/Ubuntu: apt-get install chromium) or set CHROMIUM_PATH to a Chromium or Chrome binary.`,
    );
  }
  const { dir, cleanup } = makeTempDir('neural-lineage-webview-');
  const files: Record<string, { file: string; type: string }> = {
    'index.html': { file: path.join(dir, 'index.html'), type: 'text/html' },
    'webview.js': { file: path.join(dir, 'webview.js'), type: 'text/javascript' },
    'webview.css': { file: path.join(dir, 'webview.css'), type: 'text/css' },
  };
  writeFileSync(files['webview.js']!.file, await bundleWebview(options.entry));
  writeFileSync(files['webview.css']!.file, readFileSync(path.join(ROOT, options.css)));
  writeFileSync(files['index.html']!.file, page(options.title, 'webview.js', 'webview.css'));

  const { chromium } = requireFromRoot('playwright-core') as typeof import('playwright-core');
  let browser: Browser;
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
  } catch (error) {
    cleanup();
    throw new Error(`Could not start Chromium at ${CHROMIUM}: ${error instanceof Error ? error.message : String(error)}`);
  }
  const context: BrowserContext = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  await context.route('**/*', async (route) => {
    const url = new URL(route.request().url());
    const served = url.origin === ORIGIN ? files[url.pathname.slice(1)] : undefined;
    if (!served) return route.abort('blockedbyclient');
    return route.fulfill({ status: 200, contentType: served.type, body: readFileSync(served.file) });
  });
  const tab = await context.newPage();
  const errors: string[] = [];
  tab.on('pageerror', (error) => errors.push(error.message));

  return {
    page: tab,
    dir,
    async load() {
      await tab.goto(`${ORIGIN}/index.html`);
      await tab.waitForFunction(() => (globalThis as unknown as BrowserGlobals).__posted.some((message) => message.type === 'ready'));
      if (errors.length > 0) throw new Error(`The webview threw: ${errors.join('; ')}`);
    },
    async setTheme(kind) {
      await tab.evaluate(
        ({ kind, colours, fonts }) => {
          const w = globalThis as unknown as BrowserGlobals;
          w.sessionStorage.setItem('test-theme', kind);
          w.sessionStorage.setItem('test-theme-colours', JSON.stringify(colours));
          w.sessionStorage.setItem('test-fonts', JSON.stringify(fonts));
          w.__applyTheme(kind, colours, fonts);
        },
        { kind, colours: THEMES[kind], fonts: FONT_VARIABLES },
      );
    },
    async send(message) {
      await tab.evaluate(
        (data) =>
          new Promise<void>((resolve) => {
            const w = globalThis as unknown as BrowserGlobals;
            // Listeners run in the order they were added: this one runs after the webview's.
            w.addEventListener('message', () => w.setTimeout(resolve, 0), { once: true });
            w.postMessage(data, '*');
          }),
        message,
      );
      if (errors.length > 0) throw new Error(`The webview threw: ${errors.join('; ')}`);
    },
    async settle() {
      await tab.evaluate(async () => {
        const w = globalThis as unknown as BrowserGlobals;
        const transitions = w.document.getAnimations().filter((animation: { constructor: { name: string } }) => animation.constructor.name === 'CSSTransition');
        await Promise.all(transitions.map((transition: { finished: Promise<unknown> }) => transition.finished.catch(() => undefined)));
      });
    },
    async posted() {
      return tab.evaluate(() => (globalThis as unknown as BrowserGlobals).__posted);
    },
    async close() {
      await browser.close();
      cleanup();
    },
  };
}

/** Where screenshots and exports go for a person to look at (git-ignored). */
export function artifactPath(name: string): string {
  mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, name);
}

/**
 * The browser's globals as the callbacks given to page.evaluate see them. The tests compile
 * without the DOM lib, so callbacks start with `const w = globalThis as unknown as BrowserGlobals`.
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
export interface BrowserGlobals {
  readonly document: any;
  readonly sessionStorage: any;
  readonly DOMParser: any;
  readonly XMLSerializer: any;
  getComputedStyle(element: any): any;
  postMessage(message: unknown, target: string): void;
  addEventListener(type: string, listener: () => void, options?: { once?: boolean }): void;
  setTimeout(callback: () => void, ms: number): number;
  __posted: { type: string; [key: string]: unknown }[];
  __cspViolations: string[];
  __applyTheme(kind: string, colours: Record<string, string>, fonts: Record<string, string>): void;
  __pwned?: unknown;
}
