// Packages the extension with vsce as the `package` script does (after `npm run build`, which
// `npm test`'s pretest runs) and checks the .vsix: the bundles, webviews and media are in it,
// sources, tests and tooling are not, activation is lazy, and the runtime packages that stay
// outside the bundles (onnxruntime-node with its native library, TensorFlow.js) are in it and
// load and compute from the unpacked package alone. The archive is read with the engine's own
// zip reader.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import { ZipArchive } from '../../server/src/engine/formats/zip';
import { FileSource } from '../../server/src/engine/io/byteSource';
import { makeTempDir, REPO_ROOT } from '../helpers';

/** The platform this .vsix is for; its native library is the only one it may hold. */
const TARGET = 'linux-x64';
/** vsce's arguments; the `package` script must package the same way (checked below). */
const VSCE_ARGS = ['package', '--target', TARGET];
/** A regression guard: onnxruntime-node for every platform is ~290 MB; one platform is ~18 MB. */
const MAX_VSIX_BYTES = 30 * 1024 * 1024;

const temp = makeTempDir('neural-lineage-vsix-');
after(temp.cleanup);
const vsixPath = path.join(temp.dir, 'neural-lineage.vsix');
const unpacked = path.join(temp.dir, 'unpacked');
let names: string[] = [];
let archive: ZipArchive;
let source: FileSource;

before(
  async () => {
    for (const file of ['dist/client.js', 'dist/server.js']) {
      assert.ok(existsSync(path.join(REPO_ROOT, file)), `${file} is missing: run npm run build first`);
    }
    const vsce = path.join(REPO_ROOT, 'node_modules', '@vscode', 'vsce', 'vsce');
    try {
      await promisify(execFile)(process.execPath, [vsce, ...VSCE_ARGS, '--out', vsixPath], {
        cwd: REPO_ROOT,
        timeout: 540_000,
        maxBuffer: 64 * 1024 * 1024,
        env: { ...process.env, NO_COLOR: '1' },
      });
    } catch (error) {
      const { stdout, stderr } = error as { stdout?: string; stderr?: string };
      assert.fail(`vsce ${VSCE_ARGS.join(' ')} failed: ${error}\n${stdout ?? ''}\n${stderr ?? ''}`);
    }
    source = await FileSource.open(vsixPath);
    archive = await ZipArchive.open(source);
    names = [...archive.members.keys()].sort();
  },
  { timeout: 600_000 },
);

after(async () => {
  await source?.close();
});

async function memberText(name: string): Promise<string> {
  const member = await archive.member(name);
  return (await member.read(0, member.size)).toString('utf8');
}

/** Writes the members under extension/ to `unpacked`, as VS Code installs them. */
async function unpack(): Promise<string> {
  const root = path.join(unpacked, 'extension');
  if (existsSync(root)) return root;
  for (const name of names.filter((n) => n.startsWith('extension/') && !n.endsWith('/'))) {
    const target = path.join(unpacked, name);
    assert.ok(target.startsWith(unpacked + path.sep), `member ${name} escapes the folder`);
    mkdirSync(path.dirname(target), { recursive: true });
    const member = await archive.member(name);
    writeFileSync(target, await member.read(0, member.size));
  }
  return root;
}

test('the package script packages for one platform with the runtime dependencies', () => {
  const script = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')).scripts?.package as string | undefined;
  assert.ok(script, 'package.json has no "package" script');
  assert.match(script, /\bvsce package\b/);
  assert.doesNotMatch(script, /--no-dependencies/, 'with --no-dependencies the .vsix lacks onnxruntime-node and TensorFlow.js');
  assert.match(script, new RegExp(`(--target|-t) ${TARGET}\\b`), `the .vsix holds ${TARGET} binaries only: package with --target ${TARGET}`);
});

test('holds the manifest, the bundles, the webview scripts and the media', () => {
  for (const name of ['extension.vsixmanifest', 'extension/package.json', 'extension/dist/client.js', 'extension/dist/server.js', 'extension/dist/cli.js', 'extension/dist/lineageDetector.onnx', 'extension/dist/lineageDetector.json']) {
    assert.ok(names.includes(name), `${name} is missing from the .vsix`);
  }
  assert.ok(names.some((n) => /^extension\/dist\/webview\/[^/]+\.js$/.test(n)), 'no webview script under extension/dist/webview/');
  assert.ok(names.some((n) => n.startsWith('extension/media/') && !n.endsWith('/')), 'nothing under extension/media/');
});

test('holds no sources, tests, source maps or tooling', () => {
  const forbidden: [RegExp, string][] = [
    [/^extension\/test\//, 'tests'],
    [/^extension\/(server|client)\/src\//, 'sources'],
    [/^extension\/out\//, 'compiled tests'],
    [/\.ts$/, 'TypeScript sources or declarations'],
    [/\.map$/, 'source maps'],
    [/(^|\/)node_modules\/\.cache\//, 'caches'],
    [/^extension\/\.(vscode-server|vscode-test|cache|ci|vscode|git)\//, 'tooling folders'],
    [/^extension\/(esbuild\.js|tsconfig[^/]*\.json|package-lock\.json|\.npmrc)$/, 'build files'],
    [/^extension\/node_modules\/(typescript|esbuild|@vscode\/vsce|playwright-core|@types)\//, 'dev dependencies'],
    [/\.vsix$/, 'other packages'],
  ];
  for (const [pattern, what] of forbidden) {
    const found = names.filter((n) => pattern.test(n));
    assert.deepEqual(found, [], `the .vsix holds ${what}`);
  }
});

test(`holds onnxruntime-node's native library for ${TARGET} and for no other platform`, () => {
  const [os, arch] = TARGET.split('-');
  const bin = `extension/node_modules/onnxruntime-node/bin/napi-v6/${os}/${arch}/`;
  for (const file of ['onnxruntime_binding.node', 'libonnxruntime.so.1']) assert.ok(names.includes(bin + file), `${bin}${file} is missing`);
  const others = names.filter((n) => n.startsWith('extension/node_modules/onnxruntime-node/bin/') && !n.startsWith(bin));
  assert.deepEqual(others, [], 'binaries for other platforms');
});

test('declares its target platform and activates lazily', async () => {
  assert.match(await memberText('extension.vsixmanifest'), new RegExp(`TargetPlatform="${TARGET}"`));
  const manifest = JSON.parse(await memberText('extension/package.json'));
  const events: string[] = manifest.activationEvents ?? [];
  assert.ok(events.length > 0, 'no activation events');
  for (const event of events) assert.ok(event !== '*' && event !== 'onStartupFinished', `eager activation event ${event}`);
  assert.ok(names.includes(`extension/${path.posix.normalize(manifest.main)}`), `main ${manifest.main} is not in the .vsix`);
});

test(`stays under ${MAX_VSIX_BYTES / 1024 / 1024} MB`, () => {
  assert.ok(source.size < MAX_VSIX_BYTES, `the .vsix is ${(source.size / 1024 / 1024).toFixed(1)} MB`);
});

test('every package the bundles require loads and computes from the unpacked .vsix alone', async () => {
  const root = await unpack();
  const manifest = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
  const optional = new Set(Object.keys(manifest.optionalDependencies ?? {}));
  const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
  // The packages the bundles leave outside (esbuild.js `external`), as they are written there.
  const required = new Set<string>(['onnxruntime-node', '@tensorflow/tfjs-core', '@tensorflow/tfjs-backend-cpu', '@tensorflow/tfjs-backend-wasm']);
  for (const bundle of ['dist/server.js', 'dist/cli.js']) {
    for (const [, name] of readFileSync(path.join(root, bundle), 'utf8').matchAll(/\brequire\(["']([^"'./][^"']*)["']\)/g)) {
      if (!builtins.has(name!) && name !== 'vscode') required.add(name!);
    }
  }
  // An ONNX model computing y = x * x, written out field by field (onnx.proto).
  writeFileSync(path.join(temp.dir, 'square.onnx'), squareModel());
  const check = path.join(root, 'check-runtime.js');
  writeFileSync(check, RUNTIME_CHECK);
  const result = spawnSync(process.execPath, [check, JSON.stringify([...required]), JSON.stringify([...optional]), path.join(temp.dir, 'square.onnx')], {
    cwd: root,
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, NODE_PATH: '' },
  });
  assert.equal(result.status, 0, `runtime check failed:\n${result.stdout}\n${result.stderr}`);
  const report = JSON.parse(result.stdout.trim().split('\n').pop()!);
  assert.deepEqual(report.missing, [], 'packages the bundles require but the .vsix lacks');
  assert.deepEqual(report.outside, [], 'modules loaded from outside the unpacked .vsix');
  assert.deepEqual(report.onnx, [2.25, 4, 0]);
  assert.deepEqual(report.wasm, [11]);
  assert.deepEqual(report.cpu, [11]);
});

/** Runs in the unpacked extension folder: everything it loads must come from there. */
const RUNTIME_CHECK = `'use strict';
const path = require('node:path');
const [required, optional, model] = process.argv.slice(2).map((a, i) => (i < 2 ? JSON.parse(a) : a));
const root = __dirname;
const report = { missing: [], outside: [] };
(async () => {
  for (const name of required) {
    try {
      const file = require.resolve(name, { paths: [path.join(root, 'dist')] });
      if (!file.startsWith(root + path.sep)) report.outside.push(file);
    } catch (error) {
      if (!optional.includes(name)) report.missing.push(name + ': ' + error.message.split('\\n')[0]);
    }
  }
  const ort = require('onnxruntime-node');
  const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'] });
  const output = await session.run({ x: new ort.Tensor('float32', Float32Array.from([1.5, -2, 0]), [3]) });
  report.onnx = Array.from(output.y.data);
  const tf = require('@tensorflow/tfjs-core');
  require('@tensorflow/tfjs-backend-cpu');
  require('@tensorflow/tfjs-backend-wasm');
  for (const backend of ['wasm', 'cpu']) {
    if (!(await tf.setBackend(backend))) throw new Error('backend ' + backend + ' did not initialise');
    report[backend] = Array.from(await tf.matMul(tf.tensor2d([[1, 2]]), tf.tensor2d([[3], [4]])).data());
  }
  report.outside.push(...Object.keys(require.cache).filter((file) => !file.startsWith(root + path.sep)));
  console.log(JSON.stringify(report));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
`;

/** A minimal ONNX model: one Mul node, y = x * x, x and y float tensors of shape [3]. */
function squareModel(): Buffer {
  const varint = (value: number): Buffer => {
    const bytes: number[] = [];
    while (value > 127) {
      bytes.push((value & 127) | 128);
      value = Math.floor(value / 128);
    }
    bytes.push(value);
    return Buffer.from(bytes);
  };
  const bytesField = (field: number, ...parts: (Buffer | string)[]): Buffer => {
    const data = Buffer.concat(parts.map((p) => Buffer.from(p)));
    return Buffer.concat([varint((field << 3) | 2), varint(data.length), data]);
  };
  const intField = (field: number, value: number): Buffer => Buffer.concat([varint(field << 3), varint(value)]);
  // ValueInfoProto{name=1, type=2{TypeProto.tensor_type=1{elem_type=1 (FLOAT), shape=2{dim=1{dim_value=1}}}}}
  const floatVector = (name: string) =>
    Buffer.concat([bytesField(1, name), bytesField(2, bytesField(1, intField(1, 1), bytesField(2, bytesField(1, intField(1, 3)))))]);
  // NodeProto{input=1, input=1, output=2, op_type=4}
  const node = Buffer.concat([bytesField(1, 'x'), bytesField(1, 'x'), bytesField(2, 'y'), bytesField(4, 'Mul')]);
  // GraphProto{node=1, name=2, input=11, output=12}
  const graph = Buffer.concat([bytesField(1, node), bytesField(2, 'square'), bytesField(11, floatVector('x')), bytesField(12, floatVector('y'))]);
  // ModelProto{ir_version=1, producer_name=2, graph=7, opset_import=8{domain=1 "", version=2}}
  return Buffer.concat([intField(1, 8), bytesField(2, 'neural-lineage-test'), bytesField(7, graph), bytesField(8, bytesField(1, ''), intField(2, 13))]);
}
