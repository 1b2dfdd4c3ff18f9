import { describeError } from './errors';
import type { FormatName } from './formats/checkpoint';
import type { DType } from './formats/dtype';
import { openCheckpoint } from './formats/index';

/** What `inspect` reports of one checkpoint, read from its index alone. */
export interface InspectReport {
  readonly path: string;
  readonly format?: FormatName;
  readonly tensorCount: number;
  readonly parameterCount: number;
  readonly byteSize: number;
  /** Per element type: how many tensors and parameters use it. */
  readonly dtypes: Readonly<Partial<Record<DType, { tensors: number; parameters: number }>>>;
  readonly tensors: readonly { name: string; dtype: DType; shape: readonly number[] }[];
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly warnings: readonly string[];
  /** Set when the file could not be read; the other fields are then empty. */
  readonly error?: string;
}

export async function inspectCheckpoint(file: string): Promise<InspectReport> {
  let checkpoint;
  try {
    checkpoint = await openCheckpoint(file);
  } catch (error) {
    return { path: file, tensorCount: 0, parameterCount: 0, byteSize: 0, dtypes: {}, tensors: [], metadata: {}, warnings: [], error: describeError(error) };
  }
  try {
    const dtypes: Partial<Record<DType, { tensors: number; parameters: number }>> = {};
    let parameterCount = 0;
    let byteSize = 0;
    for (const tensor of checkpoint.tensors) {
      parameterCount += tensor.elementCount;
      byteSize += tensor.byteSize;
      const entry = (dtypes[tensor.dtype] ??= { tensors: 0, parameters: 0 });
      entry.tensors += 1;
      entry.parameters += tensor.elementCount;
    }
    return {
      path: file,
      format: checkpoint.format,
      tensorCount: checkpoint.tensors.length,
      parameterCount,
      byteSize,
      dtypes,
      tensors: checkpoint.tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })),
      metadata: checkpoint.metadata,
      warnings: checkpoint.warnings,
    };
  } finally {
    await checkpoint.close();
  }
}
