import type { Tensor } from './tensor';

export type FormatName =
  | 'safetensors' | 'pytorch-zip' | 'pytorch-tar' | 'pytorch-pickle' | 'npy' | 'npz'
  | 'onnx' | 'keras-h5' | 'keras' | 'tfjs' | 'gguf' | 'tflite';

/** A checkpoint opened by a format reader: its index and metadata, with tensor values left on disk. */
export interface Checkpoint {
  readonly path: string;
  readonly format: FormatName;
  /** Metadata declared in the file (safetensors `__metadata__`, non-tensor entries of a state dict, ...). */
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly tensors: readonly Tensor[];
  /**
   * The network's layer graph as its framework saved it, as parsed JSON (Keras 2 `model_config`,
   * Keras 3 config.json, a TF.js layers model's topology), for the executor that rebuilds it.
   */
  readonly modelConfig?: unknown;
  /** Problems that did not stop the reading (entries skipped, placeholders for unknown objects). */
  readonly warnings: readonly string[];
  close(): Promise<void>;
}

/** One module per format family implements this. */
export interface FormatReader {
  /** Short name for messages, e.g. "safetensors" or "PyTorch". */
  readonly name: string;
  /** Cheap test on the file name and its first bytes. */
  sniff(path: string, head: Buffer): boolean;
  open(path: string): Promise<Checkpoint>;
}
