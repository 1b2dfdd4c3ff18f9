import assert from 'node:assert/strict';
import type { Checkpoint } from '../../server/src/engine/formats/checkpoint';
import type { Tensor } from '../../server/src/engine/formats/tensor';

/** Runs `use` on a checkpoint being opened and always closes it, as every reader test needs. */
export async function usingCheckpoint<T>(opening: Promise<Checkpoint>, use: (checkpoint: Checkpoint) => Promise<T>): Promise<T> {
  const checkpoint = await opening;
  try {
    return await use(checkpoint);
  } finally {
    await checkpoint.close();
  }
}

/** The listed tensor of that name; failing the test when it is not listed. */
export function tensorNamed(checkpoint: Checkpoint, name: string): Tensor {
  const tensor = checkpoint.tensors.find((candidate) => candidate.name === name);
  assert.ok(tensor, `tensor ${name} is listed`);
  return tensor;
}
