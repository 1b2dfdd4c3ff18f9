import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from '../errors';
import { FileSource } from '../io/byteSource';
import type { Checkpoint, FormatReader } from './checkpoint';
import { ggufReader } from './gguf';
import { kerasH5Reader, kerasReader } from './keras';
import { npyReader, npzReader } from './numpy';
import { onnxReader } from './onnx';
import { pytorchReader } from './pytorch';
import { safetensorsReader } from './safetensors';
import { isTfjsModelJson, tfjsReader } from './tfjs';
import { tfliteReader } from './tflite';

/** Readers in the order they are asked; the first whose sniff accepts the file opens it. */
/**
 * GGUF and TFLite come before PyTorch, which claims any `.bin` file: old GGUF files and some
 * TFLite models are named `.bin`, and both carry a magic number that settles it. Keras 3 files
 * are zips too, so they are also asked before PyTorch.
 */
const READERS: readonly FormatReader[] = [
  ggufReader, tfliteReader, safetensorsReader, npzReader, npyReader, tfjsReader, kerasReader, kerasH5Reader, pytorchReader, onnxReader,
];

/** File names the tool treats as checkpoints when it looks through a folder. */
const CHECKPOINT_NAME = /\.(safetensors|pt|pth|ckpt|bin|npz|npy|onnx|gguf|tflite|h5|hdf5|keras)$|\.(safetensors|bin)\.index\.json$|^model\.json$/i;
/** TF.js weight shards: read through the model.json that lists them, never on their own. */
const TFJS_SHARD_NAME = /^group\d+-shard\d+of\d+(\.bin)?$/i;

export function isCheckpointPath(file: string): boolean {
  const name = path.basename(file);
  return CHECKPOINT_NAME.test(name) && !TFJS_SHARD_NAME.test(name);
}

const SNIFF_BYTES = 64;

/**
 * The file that holds a model folder's weights, in the order Hugging Face loaders prefer them:
 * a model folder (config.json + weights) or a PEFT adapter folder (adapter_config.json +
 * adapter weights) is one checkpoint, opened through this file.
 */
const FOLDER_WEIGHTS = [
  'model.safetensors.index.json', 'model.safetensors', 'pytorch_model.bin.index.json', 'pytorch_model.bin',
  'adapter_model.safetensors', 'adapter_model.bin', 'model.keras', 'tf_model.h5', 'model.weights.h5', 'model.onnx', 'model.json',
];

/** The weights file of a model folder, or the path itself when it is a file. */
export async function checkpointFileOf(location: string): Promise<string> {
  const stat = await fs.stat(location).catch(() => undefined);
  if (!stat?.isDirectory()) return location;
  const entries = new Set(await fs.readdir(location));
  const weights = FOLDER_WEIGHTS.find((name) => entries.has(name)) ?? [...entries].sort().find((name) => /\.gguf$/i.test(name));
  if (!weights) throw new CheckpointError(location, `a folder with no model weights in it (looked for ${FOLDER_WEIGHTS.join(', ')}, *.gguf)`);
  return path.join(location, weights);
}

/** Opens any supported checkpoint, choosing the reader from the file name and first bytes; a model folder opens its weights. */
export async function openCheckpoint(location: string): Promise<Checkpoint> {
  const file = await checkpointFileOf(location);
  const source = await FileSource.open(file);
  let head: Buffer;
  try {
    head = await source.read(0, Math.min(SNIFF_BYTES, source.size));
  } finally {
    await source.close();
  }
  if (head.length === 0) throw new CheckpointError(file, 'the file is empty');
  // A renamed TF.js model.json is recognised by its keys, which may lie beyond the sniffed bytes.
  const reader = READERS.find((candidate) => candidate.sniff(file, head)) ?? ((await isTfjsModelJson(file)) ? tfjsReader : undefined);
  if (!reader) throw new CheckpointError(file, 'not a checkpoint format this tool reads (safetensors, PyTorch, NumPy, ONNX, GGUF, TensorFlow.js, TFLite, Keras)');
  return reader.open(file);
}
