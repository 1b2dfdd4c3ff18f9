// Bundles the client, the language server and the CLI with esbuild. Type-checking is separate
// (`npm run typecheck`), as in vscode-extension-samples' esbuild-sample.
const esbuild = require('esbuild');
const fs = require('node:fs');
const path = require('node:path');

const watch = process.argv.includes('--watch');
const production = process.argv.includes('--production');

/**
 * Native and optional runtime packages stay outside the bundles and load from node_modules.
 * All of TensorFlow.js stays out together: its backends register into the tfjs-core they
 * require themselves, which must be the one the engine uses.
 */
const nativeModules = ['onnxruntime-node', '@tensorflow/*'];

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: !production,
  minify: production,
  logLevel: 'info',
};

/** Scripts that run inside webviews: browser bundles with no Node or VS Code imports. */
const webview = { bundle: true, platform: 'browser', target: 'es2022', format: 'iife', sourcemap: !production, minify: production, logLevel: 'info' };

const builds = [
  { ...webview, entryPoints: ['client/src/webview/graph.ts'], outfile: 'dist/webview/graph.js' },
  { ...webview, entryPoints: ['client/src/webview/checkpoint.ts'], outfile: 'dist/webview/checkpoint.js' },
  { ...common, entryPoints: ['client/src/extension.ts'], outfile: 'dist/client.js', external: ['vscode'] },
  { ...common, entryPoints: ['server/src/server.ts'], outfile: 'dist/server.js', external: nativeModules },
  { ...common, entryPoints: ['server/src/cli/main.ts'], outfile: 'dist/cli.js', external: nativeModules, banner: { js: '#!/usr/bin/env node' } },
];

/** The learned detector's weights load at run time from beside the server and CLI bundles. */
const DETECTOR_FILES = ['lineageDetector.onnx', 'lineageDetector.json'];

function copyDetector() {
  fs.mkdirSync('dist', { recursive: true });
  for (const file of DETECTOR_FILES) fs.copyFileSync(path.join('server', 'src', 'engine', 'detector', file), path.join('dist', file));
}

async function main() {
  copyDetector();
  if (watch) {
    for (const options of builds) await (await esbuild.context(options)).watch();
    return;
  }
  await Promise.all(builds.map((options) => esbuild.build(options)));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
