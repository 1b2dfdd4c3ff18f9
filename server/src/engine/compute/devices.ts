import { selectTfjsBackend, type DevicePreference, type TfjsBackendName } from './tfjsBackend';

/**
 * What the compute backends offer on this machine for a device preference: the TensorFlow.js
 * backend that loads, and the onnxruntime execution providers to try, in order. GPU providers
 * come first unless the CPU is asked for; onnxruntime-node bundles the CPU and WebGPU providers
 * and leaves CUDA and TensorRT to an opt-in install.
 */
export interface ComputeDevices {
  readonly preference: DevicePreference;
  readonly tfjs: { readonly backend?: TfjsBackendName; readonly skipped: readonly string[]; readonly error?: string };
  readonly onnxruntime: { readonly providers: readonly string[]; readonly unavailable: readonly string[]; readonly error?: string };
}

const GPU_PROVIDERS = ['cuda', 'webgpu'];

export async function describeComputeDevices(preference: DevicePreference): Promise<ComputeDevices> {
  let tfjs: ComputeDevices['tfjs'];
  try {
    const selection = await selectTfjsBackend(preference);
    tfjs = { backend: selection.backend, skipped: selection.skipped };
  } catch (error) {
    tfjs = { skipped: [], error: (error as Error).message };
  }
  let onnxruntime: ComputeDevices['onnxruntime'];
  try {
    const { listSupportedBackends } = require('onnxruntime-node') as { listSupportedBackends(): { name: string; bundled: boolean }[] };
    const backends = listSupportedBackends();
    const wanted = preference === 'cpu' ? ['cpu'] : [...GPU_PROVIDERS, 'cpu'];
    onnxruntime = {
      providers: wanted.filter((name) => backends.some((backend) => backend.name === name && backend.bundled)),
      unavailable: backends.filter((backend) => !backend.bundled).map((backend) => backend.name),
    };
  } catch (error) {
    onnxruntime = { providers: [], unavailable: [], error: (error as Error).message };
  }
  return { preference, tfjs, onnxruntime };
}
