import { parseArgs } from 'node:util';
import { describeComputeDevices } from '../engine/compute/devices';
import { defaultCacheDirectory, FingerprintCache } from '../engine/fingerprint/cache';
import { runInspect } from './inspectCommand';
import { runParent } from './parentCommand';
import { runScan, type ScanFormat } from './scanCommand';

const USAGE = `Usage: neural-lineage <command> [options]

Commands:
  inspect FILE... [--json] [--all]      format, tensors, parameters, dtypes, shapes and declared
                                        metadata of checkpoints; reads headers only
  parent CHILD --candidates P... [--json]
                                        which candidate CHILD was fine-tuned from, or none
  scan DIR [--json|--dot|--mermaid]     every checkpoint under DIR and the lineage graph
  devices [--device auto|cpu|gpu] [--json]
                                        the compute backends that load here, in the order used

Options:
  --json             machine-readable output on stdout
  --all              (inspect) list every tensor, not only the first ones
  --cache-dir DIR    where fingerprints are kept (default ${defaultCacheDirectory()})
  -h, --help         this help
`;

class UsageError extends Error {}

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
      return runParent(child, candidates, cache, values.json ?? false, write);
    }
    case 'scan': {
      if (positionals.length !== 1) throw new UsageError('scan needs one DIR');
      const format: ScanFormat = values.json ? 'json' : values.dot ? 'dot' : values.mermaid ? 'mermaid' : 'text';
      const progress = process.stderr.isTTY ? (text: string) => process.stderr.write(`\r\x1b[K${text}`) : () => undefined;
      return runScan(positionals[0]!, format, cache, write, progress);
    }
    case 'devices': {
      const device = values.device;
      if (device !== 'auto' && device !== 'cpu' && device !== 'gpu') throw new UsageError('--device is auto, cpu or gpu');
      const devices = await describeComputeDevices(device);
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
