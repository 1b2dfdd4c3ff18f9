/**
 * Every problem with a checkpoint surfaces as a CheckpointError that names the file, so the
 * CLI, the language server and the tests can show it without a stack trace and go on.
 */
export class CheckpointError extends Error {
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = 'CheckpointError';
  }
}

/** The file changed on disk while it was being read; the caller may retry. */
export class FileChangedError extends CheckpointError {
  constructor(file: string) {
    super(file, 'the file changed while it was being read');
    this.name = 'FileChangedError';
  }
}

/** A read was cancelled through its AbortSignal. */
export class CancelledError extends Error {
  constructor() {
    super('cancelled');
    this.name = 'CancelledError';
  }
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new CancelledError();
}

/** Narrows any thrown value to a message suitable for a user. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
