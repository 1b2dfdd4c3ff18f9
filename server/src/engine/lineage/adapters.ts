import type { Fingerprint, TensorFingerprint } from '../fingerprint/fingerprint';

/**
 * An unmerged LoRA adapter (PEFT `adapter_model.safetensors`, kohya `lora_down`/`lora_up`)
 * holds only low-rank factors A (r × in) and B (out × r) per targeted module. It attaches to a
 * base model that has those modules with weights of shape out × in. The factors say nothing
 * about which of several same-shaped bases was used, so several fitting bases share the
 * confidence unless a declaration names one.
 */
export interface AdapterTargets {
  /** Targeted module names with underscores for dots (kohya mangles them so), and their out × in shapes. */
  readonly modules: ReadonlyMap<string, readonly [number, number]>;
  readonly rank: number;
}

const LORA_FACTOR = /^(.*?)\.(lora_A|lora_B|lora_down|lora_up)(?:\.[A-Za-z0-9_]+)?\.weight$/;
/** Wrapper prefixes PEFT and kohya put before the base model's own module names. */
const ADAPTER_PREFIX = /^(base_model\.model\.|lora_unet_|lora_te\d?_|lora_)/;

export function isAdapter(fingerprint: Fingerprint): boolean {
  return adapterTargets(fingerprint) !== undefined;
}

/** The modules an adapter targets, or undefined when the checkpoint is not a LoRA adapter. */
export function adapterTargets(fingerprint: Fingerprint): AdapterTargets | undefined {
  const down = new Map<string, TensorFingerprint>();
  const up = new Map<string, TensorFingerprint>();
  let factors = 0;
  for (const tensor of fingerprint.tensors) {
    const match = LORA_FACTOR.exec(tensor.storedName);
    if (!match) continue;
    factors++;
    const module = mangled(match[1]!.replace(ADAPTER_PREFIX, ''));
    (match[2] === 'lora_A' || match[2] === 'lora_down' ? down : up).set(module, tensor);
  }
  // An adapter is mostly factors; a base model with a few LoRA-named extras is not one.
  if (factors === 0 || factors < fingerprint.tensors.length / 2) return undefined;
  const modules = new Map<string, readonly [number, number]>();
  let rank = 0;
  for (const [module, a] of down) {
    const b = up.get(module);
    if (!b || a.shape.length < 2 || b.shape.length < 2) continue;
    modules.set(module, [b.shape[0]!, a.count / a.shape[0]!]);
    rank = Math.max(rank, a.shape[0]!);
  }
  return modules.size > 0 ? { modules, rank } : undefined;
}

/** Share of the adapter's targets that `base` has, as matrices of the right shape. */
export function adapterFit(targets: AdapterTargets, base: Fingerprint): number {
  const weights = new Map<string, TensorFingerprint>();
  for (const tensor of base.tensors) {
    const module = /^(.*)\.weight$/.exec(tensor.name)?.[1];
    if (module !== undefined) weights.set(mangled(module), tensor);
  }
  let fitting = 0;
  for (const [module, [rows, columns]] of targets.modules) {
    const weight = weights.get(module) ?? weights.get(module.replace(/^model_/, ''));
    if (weight && weight.shape[0] === rows && weight.count / weight.shape[0]! === columns) fitting++;
  }
  return fitting / targets.modules.size;
}

function mangled(module: string): string {
  return module.replace(/\./g, '_');
}
