import * as path from 'node:path';
import { CheckpointError } from '../errors';
import { FileSource } from '../io/byteSource';
import type { Checkpoint, FormatReader } from './checkpoint';
import { npyReader, npzReader } from './numpy';
import { pytorchReader } from './pytorch';
import { safetensorsReader } from './safetensors';

/** Readers in the order they are asked; the first whose sniff accepts the file opens it. */
const READERS: readonly FormatReader[] = [safetensorsReader, npzReader, npyReader, pytorchReader];

/** File names the tool treats as checkpoints when it looks through a folder. */
const CHECKPOINT_NAME = /\.(safetensors|pt|pth|ckpt|bin|npz|npy)$|\.(safetensors|bin)\.index\.json$/i;

export function isCheckpointPath(file: string): boolean {
  return CHECKPOINT_NAME.test(path.basename(file));
}

const SNIFF_BYTES = 64;

/** Opens any supported checkpoint, choosing the reader from the file name and first bytes. */
export async function openCheckpoint(file: string): Promise<Checkpoint> {
  const source = await FileSource.open(file);
  let head: Buffer;
  try {
    head = await source.read(0, Math.min(SNIFF_BYTES, source.size));
  } finally {
    await source.close();
  }
  if (head.length === 0) throw new CheckpointError(file, 'the file is empty');
  const reader = READERS.find((candidate) => candidate.sniff(file, head));
  if (!reader) throw new CheckpointError(file, 'not a checkpoint format this tool reads (safetensors, PyTorch, NumPy)');
  return reader.open(file);
}
