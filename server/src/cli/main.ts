import { parseArgs } from 'node:util';
import { runInspect } from './inspectCommand';

const USAGE = `Usage: neural-lineage <command> [options]

Commands:
  inspect FILE... [--json] [--all]   format, tensors, parameters, dtypes, shapes and declared
                                     metadata of checkpoints (.safetensors, .pt/.pth/.bin/.ckpt,
                                     .npy/.npz, sharded *.index.json); reads headers only

Options:
  --json     machine-readable output on stdout
  --all      list every tensor, not only the first ones
  -h, --help this help
`;

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  const { values, positionals } = parseArgs({
    args: [...rest],
    allowPositionals: true,
    options: { json: { type: 'boolean', default: false }, all: { type: 'boolean', default: false } },
  });
  switch (command) {
    case 'inspect':
      if (positionals.length === 0) throw new UsageError('inspect needs at least one FILE');
      return runInspect(positionals, { json: values.json ?? false, all: values.all ?? false }, (text) => process.stdout.write(text));
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

class UsageError extends Error {}

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
