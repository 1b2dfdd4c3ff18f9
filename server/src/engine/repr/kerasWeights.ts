import type { Tensor } from '../formats/tensor';
import { KerasConfigError, type KerasGraph, type KerasLayer } from './kerasGraph';

/**
 * Which stored tensor is which weight of which layer. Files name a layer's weights three ways:
 * Keras 2 `<layer>/kernel:0`, TF.js `<layer>/kernel`, and Keras 3 `<path>/vars/<i>`, where the
 * path is made of snake_case class names numbered in the order the model lists its layers
 * (`dense`, `dense_1`, ...; nested models add their own level) and the variables are in the
 * order the layer creates them. The roles below are those orders.
 */

export type LayerWeights = ReadonlyMap<string, Tensor>;

/** A layer's weights in creation order, given its configuration. */
function rolesOf(layer: KerasLayer): string[] {
  const config = layer.config;
  const bias = config.use_bias === false ? [] : ['bias'];
  switch (layer.className) {
    case 'Dense':
    case 'Conv2D':
    case 'Conv1D':
      return ['kernel', ...bias];
    case 'DepthwiseConv2D':
      return ['depthwise_kernel', ...bias];
    case 'SeparableConv2D':
      return ['depthwise_kernel', 'pointwise_kernel', ...bias];
    case 'BatchNormalization':
      return [...(config.scale === false ? [] : ['gamma']), ...(config.center === false ? [] : ['beta']), 'moving_mean', 'moving_variance'];
    case 'LayerNormalization':
      return [...(config.scale === false ? [] : ['gamma']), ...(config.center === false ? [] : ['beta'])];
    case 'Normalization':
      // Adapted statistics are weights; statistics given to the constructor sit in the config.
      return config.mean === undefined || config.mean === null ? ['mean', 'variance', 'count'] : [];
    case 'PReLU':
      return ['alpha'];
    default:
      return [];
  }
}

/** Keras 3 stores Keras 2's `depthwise_kernel` of a DepthwiseConv2D as its `kernel`: one role, either name. */
const ROLE_ALIASES: Readonly<Record<string, readonly string[]>> = { depthwise_kernel: ['depthwise_kernel', 'kernel'] };

/** Keras's naming.to_snake_case, which Keras 3's saving uses for the paths of layers. */
export function snakeCase(className: string): string {
  return className
    .replace(/\W+/g, '')
    .replace(/(.)([A-Z][a-z]+)/g, '$1_$2')
    .replace(/([a-z])([A-Z])/g, '$1_$2')
    .toLowerCase();
}

interface StoredLayer {
  readonly named: Map<string, Tensor>;
  readonly numbered: Map<number, Tensor>;
}

/** Stored tensors grouped by the layer path before their last component(s). */
function groupByLayer(tensors: readonly Tensor[]): Map<string, StoredLayer> {
  const layers = new Map<string, StoredLayer>();
  const layer = (path: string) => {
    let entry = layers.get(path);
    if (!entry) layers.set(path, (entry = { named: new Map(), numbered: new Map() }));
    return entry;
  };
  for (const tensor of tensors) {
    const name = tensor.name.replace(/:\d+$/, '');
    const numbered = /^(.*)\/vars\/(\d+)$/.exec(name);
    if (numbered) {
      layer(numbered[1]!).numbered.set(Number(numbered[2]), tensor);
      continue;
    }
    const named = /^(.*)\/([A-Za-z_][A-Za-z0-9_]*)$/.exec(name);
    if (named) layer(named[1]!).named.set(named[2]!, tensor);
  }
  return layers;
}

/**
 * Binds every weighted layer of the graph (nested models included) to its tensors, keyed by the
 * layer's path of names joined with '/'. Throws naming the layer whose weights are missing.
 */
export function bindWeights(graph: KerasGraph, tensors: readonly Tensor[]): Map<string, LayerWeights> {
  const stored = groupByLayer(tensors);
  // A layer is also found under the last part of its stored path: Keras 2 lists a nested model's weights under the inner names.
  const byLastPart = new Map<string, StoredLayer | null>();
  for (const [path, layer] of stored) {
    const last = path.slice(path.lastIndexOf('/') + 1);
    byLastPart.set(last, byLastPart.has(last) ? null : layer);
  }
  const bound = new Map<string, LayerWeights>();
  const visit = (model: KerasGraph, namePath: readonly string[], classPath: readonly string[]) => {
    const classCounts = new Map<string, number>();
    for (const layer of model.layers) {
      const snake = snakeCase(layer.className);
      const seen = classCounts.get(snake) ?? 0;
      classCounts.set(snake, seen + 1);
      const classKey = [...classPath, seen === 0 ? snake : `${snake}_${seen}`];
      const nameKey = [...namePath, layer.name];
      if (layer.graph) {
        visit(layer.graph, nameKey, classKey);
        continue;
      }
      const roles = rolesOf(layer);
      if (roles.length === 0) continue;
      const candidates = [stored.get(nameKey.join('/')), stored.get(layer.name), byLastPart.get(layer.name) ?? undefined, stored.get(classKey.join('/'))];
      const weights = candidates.map((found) => found && weightsOf(found, roles)).find((found) => found !== undefined);
      if (!weights) {
        throw new KerasConfigError(`the weights of layer "${layer.name}" (${layer.className}: ${roles.join(', ')}) are not in the file`);
      }
      bound.set(nameKey.join('/'), weights);
    }
  };
  visit(graph, [], []);
  return bound;
}

function weightsOf(layer: StoredLayer, roles: readonly string[]): Map<string, Tensor> | undefined {
  if (layer.numbered.size > 0) {
    if (layer.numbered.size !== roles.length) return undefined;
    const weights = new Map<string, Tensor>();
    for (const [i, role] of roles.entries()) {
      const tensor = layer.numbered.get(i);
      if (!tensor) return undefined;
      weights.set(role, tensor);
    }
    return weights;
  }
  const weights = new Map<string, Tensor>();
  for (const role of roles) {
    const tensor = (ROLE_ALIASES[role] ?? [role]).map((name) => layer.named.get(name)).find((found) => found !== undefined);
    if (!tensor) return undefined;
    weights.set(role, tensor);
  }
  return weights;
}
