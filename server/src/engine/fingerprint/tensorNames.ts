/**
 * Tensor names differ between training wrappers for the same weights: DataParallel adds
 * `module.`, torch.compile `_orig_mod.`, Lightning `model.` or `state_dict.`. A prefix is
 * removed only when every tensor of the checkpoint carries it, so `model.` stays meaningful
 * in Hugging Face models that also hold `lm_head.*`.
 */
const WRAPPER_PREFIXES = ['module.', '_orig_mod.', 'model.', 'state_dict.', 'net.', 'network.'];

export function normalisedNames(names: readonly string[]): string[] {
  let current = [...names];
  for (let changed = true; changed && current.length > 0; ) {
    changed = false;
    for (const prefix of WRAPPER_PREFIXES) {
      if (current.every((name) => name.startsWith(prefix) && name.length > prefix.length)) {
        current = current.map((name) => name.slice(prefix.length));
        changed = true;
      }
    }
  }
  return current;
}
