import { parseArgs } from 'node:util';
import { describeComputeDevices } from '../engine/compute/devices';
import type { DevicePreference } from '../engine/compute/tfjsBackend';
import { isParentMethod, PARENT_METHODS } from '../engine/lineage/methods';
import { DEFAULT_ALPHA } from '../engine/repr/representation';
import { defaultCacheDirectory, FingerprintCache } from '../engine/fingerprint/cache';
import { runInspect } from './inspectCommand';
import { runParent } from './parentCommand';
import { runScan, type ScanFormat } from './scanCommand';

const USAGE = `Usage: neural-lineage <command> [options]

Commands:
  inspect FILE... [--json] [--all]      format, tensors, parameters, dtypes, shapes and declared
                                        metadata of checkpoints; reads headers only
  parent CHILD --candidates P... [--method M] [--probe PATH] [--alpha A] [--device D] [--json]
                                        which candidate CHILD was fine-tuned from, or none;
                                        M is ${PARENT_METHODS.join(', ')}
  scan DIR [--json|--dot|--mermaid]     every checkpoint under DIR and the lineage graph
  devices [--device auto|cpu|gpu] [--json]
                                        the compute backends that load here, in the order used

Options:
  --json             machine-readable output on stdout
  --all              (inspect) list every tensor, not only the first ones
  --method M         (parent) weights: fingerprints; repr-*: features of a probe compared
                     directly or with the fine-tuning approximation (-approx); detector: the
                     learned detector; auto (default): weights, else the detector
  --probe PATH       (parent) probe inputs: .npy/.npz or a folder of PNG/PGM/PPM images
                     (default: a deterministic synthetic batch shaped for the model)
  --alpha A          (parent) weight of the fine-tuning approximation (default ${DEFAULT_ALPHA})
  --device D         auto, cpu or gpu: where forward passes run
  --cache-dir DIR    where fingerprints are kept (default ${defaultCacheDirectory()})
  -h, --help         this help
`;

class UsageError extends Error {}

function devicePreference(device: string | undefined): DevicePreference {
  if (device !== 'auto' && device !== 'cpu' && device !== 'gpu') throw new UsageError('--device is auto, cpu or gpu');
  return device;
}

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  const { values, positionals } = parseArgs({
    args: [...rest],
    allowPositionals: true,
    options: {
      json: { type: 'boolean', default: false },
      all: { type: 'boolean', default: false },
      dot: { type: 'boolean', default: false },
      mermaid: { type: 'boolean', default: false },
      candidates: { type: 'string', multiple: true },
      'cache-dir': { type: 'string' },
      device: { type: 'string', default: 'auto' },
      method: { type: 'string', default: 'auto' },
      probe: { type: 'string' },
      alpha: { type: 'string' },
    },
  });
  const cache = new FingerprintCache(values['cache-dir'] ?? defaultCacheDirectory());
  const write = (text: string) => process.stdout.write(text);
  switch (command) {
    case 'inspect':
      if (positionals.length === 0) throw new UsageError('inspect needs at least one FILE');
      return runInspect(positionals, { json: values.json ?? false, all: values.all ?? false }, write);
    case 'parent': {
      // `--candidates a b c` takes the following positionals too, as in the README.
      const [child, ...more] = positionals;
      const candidates = [...(values.candidates ?? []), ...more];
      if (!child || candidates.length === 0) throw new UsageError('parent needs CHILD and --candidates P...');
      const method = values.method ?? 'auto';
      if (!isParentMethod(method)) throw new UsageError(`--method is one of ${PARENT_METHODS.join(', ')}`);
      const alpha = values.alpha === undefined ? undefined : Number(values.alpha);
      if (alpha !== undefined && !Number.isFinite(alpha)) throw new UsageError('--alpha needs a number');
      return runParent(child, candidates, cache, values.json ?? false, { method, probe: values.probe, alpha, device: devicePreference(values.device) }, write);
    }
    case 'scan': {
      if (positionals.length !== 1) throw new UsageError('scan needs one DIR');
      const format: ScanFormat = values.json ? 'json' : values.dot ? 'dot' : values.mermaid ? 'mermaid' : 'text';
      const progress = process.stderr.isTTY ? (text: string) => process.stderr.write(`\r\x1b[K${text}`) : () => undefined;
      return runScan(positionals[0]!, format, cache, write, progress);
    }
    case 'devices': {
      const devices = await describeComputeDevices(devicePreference(values.device));
      if (values.json) {
        write(JSON.stringify(devices, null, 2) + '\n');
      } else {
        write(`device preference  ${devices.preference}\n`);
        write(`TensorFlow.js      ${devices.tfjs.backend ?? `none (${devices.tfjs.error})`}${devices.tfjs.skipped.length ? `  (passed over: ${devices.tfjs.skipped.join('; ')})` : ''}\n`);
        write(`onnxruntime        ${devices.onnxruntime.providers.join(' → ') || `none (${devices.onnxruntime.error})`}${devices.onnxruntime.unavailable.length ? `  (not installed: ${devices.onnxruntime.unavailable.join(', ')})` : ''}\n`);
      }
      return 0;
    }
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    const usage = error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    process.stderr.write(`neural-lineage: ${(error as Error).message}\n${usage ? USAGE : ''}`);
    process.exitCode = 2;
  },
);
