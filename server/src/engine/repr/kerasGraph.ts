/**
 * A Keras or TF.js layers model's configuration read into one graph form, whichever wrote it:
 *
 * - Keras 2 (`model_config` of an `.h5`) and TF.js (a layers model's `modelTopology`): each layer
 *   is `{class_name, config, name, inbound_nodes}`, a node's inputs `[layer, node, tensor, kwargs]`.
 * - Keras 3 (`config.json` of a `.keras`): layers also carry `module` and `registered_name`, and
 *   a node is `{args, kwargs}` whose arguments hold `__keras_tensor__` objects with a
 *   `keras_history` of `[layer, node, tensor]`.
 *
 * Sequential models become graphs too, and a model used as a layer (transfer learning nests the
 * base model so) keeps its own graph. Only the structure is read here; the layers' semantics are
 * kerasFeatureModel.ts's. Nothing in a configuration is executed: a `Lambda` layer's code stays text.
 */

export interface TensorRef {
  readonly layer: string;
  readonly node: number;
  readonly tensor: number;
}

export interface KerasLayer {
  readonly name: string;
  readonly className: string;
  readonly config: Readonly<Record<string, unknown>>;
  /** Per call of the layer (node), the tensors it was called on. */
  readonly calls: readonly (readonly TensorRef[])[];
  /** A model used as a layer. */
  readonly graph?: KerasGraph;
}

export interface KerasGraph {
  readonly name: string;
  /** In the configuration's order. */
  readonly layers: readonly KerasLayer[];
  readonly inputs: readonly TensorRef[];
  readonly outputs: readonly TensorRef[];
  /** Per input, the shape of one sample as declared (null where any size goes). */
  readonly inputShapes: readonly (readonly (number | null)[])[];
}

const MODEL_CLASSES = new Set(['Sequential', 'Functional', 'Model']);
/** Deepest nesting of models followed; real models nest one or two levels. */
const MAX_MODEL_DEPTH = 16;

export class KerasConfigError extends Error {}

/** The graph of a model configuration; throws KerasConfigError naming what does not fit. */
export function readKerasGraph(modelConfig: unknown): KerasGraph {
  return readModel(withSnakeCaseKeys(modelConfig, 0), 0);
}

/** Deepest JSON nesting read; a layer's config nests a few levels inside each model. */
const MAX_JSON_DEPTH = 64 * MAX_MODEL_DEPTH;

/**
 * Keras writes snake_case keys; tfjs-layers reads camelCase ones too (`batchInputShape`,
 * `inboundNodes`), and hand-edited topologies use them. Keys only: names are values.
 */
function withSnakeCaseKeys(value: unknown, depth: number): unknown {
  if (depth > MAX_JSON_DEPTH) throw new KerasConfigError('the configuration nests too deeply');
  if (Array.isArray(value)) return value.map((item) => withSnakeCaseKeys(item, depth + 1));
  if (!isObject(value)) return value;
  return Object.fromEntries(Object.entries(value).map(([key, item]) => [key.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`), withSnakeCaseKeys(item, depth + 1)]));
}

export function isModelClass(className: string): boolean {
  return MODEL_CLASSES.has(className);
}

function readModel(value: unknown, depth: number): KerasGraph {
  if (depth > MAX_MODEL_DEPTH) throw new KerasConfigError(`models nest deeper than ${MAX_MODEL_DEPTH} levels`);
  const model = object(value, 'the model configuration');
  const className = string(model.class_name, 'the model class');
  const config = object(model.config, `${className}'s config`);
  if (className === 'Sequential') return readSequential(config, depth);
  if (className === 'Functional' || className === 'Model') return readFunctional(config, depth);
  throw new KerasConfigError(`a ${className} model is not a Sequential or functional model`);
}

/**
 * A model used as a layer was called once when it was built, on its own inputs; that call is
 * not in the configuration. Keras 2 and TF.js still count it in every reference to the model's
 * calls (so its first listed call is node 1), Keras 3 counts it in `input_layers` and
 * `output_layers` but not in call arguments. References are renumbered here to index `calls`.
 */
function readFunctional(config: Readonly<Record<string, unknown>>, depth: number): KerasGraph {
  const name = typeof config.name === 'string' ? config.name : 'model';
  const entries = list(config.layers, `${name}'s layers`);
  const nested = new Set(entries.filter((entry) => isObject(entry) && typeof entry.class_name === 'string' && MODEL_CLASSES.has(entry.class_name)).map(nameOf));
  const listed = (ref: TensorRef): TensorRef => (nested.has(ref.layer) && ref.node > 0 ? { ...ref, node: ref.node - 1 } : ref);
  const layers = entries.map((entry) => readLayer(entry, depth, (layer) => readCalls(layer, listed)));
  const inputs = readEndpoints(config.input_layers, `${name}'s input_layers`).map(listed);
  const outputs = readEndpoints(config.output_layers, `${name}'s output_layers`).map(listed);
  const byName = new Map(layers.map((layer) => [layer.name, layer]));
  for (const ref of [...inputs, ...outputs, ...layers.flatMap((layer) => layer.calls.flat())]) {
    if (!byName.has(ref.layer)) throw new KerasConfigError(`${name} refers to a layer "${ref.layer}" it does not list`);
  }
  const inputShapes = inputs.map((ref) => declaredShape(byName.get(ref.layer)!));
  return { name, layers, inputs, outputs, inputShapes };
}

/** A chain: each layer called once on the previous one's output, after an input layer. */
function readSequential(config: Readonly<Record<string, unknown>>, depth: number): KerasGraph {
  const name = typeof config.name === 'string' ? config.name : 'sequential';
  const entries = list(config.layers, `${name}'s layers`);
  const declared = entries.map((entry) => readLayer(entry, depth, () => []));
  const first = declared[0];
  if (!first) throw new KerasConfigError(`${name} has no layers`);
  const inputLayer = first.className === 'InputLayer' ? first : undefined;
  const shape = inputLayer ? declaredShape(inputLayer) : declaredShape(first, config.build_input_shape);
  const inputName = inputLayer?.name ?? `${name}_input`;
  const layers: KerasLayer[] = [inputLayer ?? { name: inputName, className: 'InputLayer', config: {}, calls: [] }];
  let previous: TensorRef = { layer: inputName, node: 0, tensor: 0 };
  for (const layer of declared.slice(inputLayer ? 1 : 0)) {
    layers.push({ ...layer, calls: [[previous]] });
    previous = { layer: layer.name, node: 0, tensor: 0 };
  }
  return { name, layers, inputs: [{ layer: inputName, node: 0, tensor: 0 }], outputs: [previous], inputShapes: [shape] };
}

/** A layer entry's name: on the entry (Keras 2 functional, Keras 3) or in its config. */
function nameOf(entry: unknown): string | undefined {
  if (!isObject(entry)) return undefined;
  if (typeof entry.name === 'string') return entry.name;
  return isObject(entry.config) && typeof entry.config.name === 'string' ? entry.config.name : undefined;
}

function readLayer(value: unknown, depth: number, calls: (layer: Readonly<Record<string, unknown>>) => TensorRef[][]): KerasLayer {
  const layer = object(value, 'a layer');
  const className = string(layer.class_name, 'a layer class');
  const config = object(layer.config ?? {}, `a ${className} layer's config`);
  const name = nameOf(layer);
  if (name === undefined) throw new KerasConfigError(`a ${className} layer has no name`);
  const graph = MODEL_CLASSES.has(className) ? readModel(layer, depth + 1) : undefined;
  return { name, className, config, calls: calls(layer), ...(graph ? { graph } : {}) };
}

/** A layer's calls in either generation's form; `listed` renumbers Keras 2 references (see readFunctional). */
function readCalls(layer: Readonly<Record<string, unknown>>, listed: (ref: TensorRef) => TensorRef): TensorRef[][] {
  const nodes = layer.inbound_nodes === undefined ? [] : list(layer.inbound_nodes, 'inbound_nodes');
  return nodes.map((node) => {
    if (Array.isArray(node)) return node.map((entry) => listed(historyRef(entry, 'an inbound node')));
    const refs: TensorRef[] = [];
    collectKerasTensors(object(node, 'an inbound node').args, refs, 0);
    return refs;
  });
}

/** Keras 3's `__keras_tensor__` objects (or bare keras_history holders) anywhere in a call's arguments, in order. */
function collectKerasTensors(value: unknown, refs: TensorRef[], depth: number): void {
  if (depth > MAX_MODEL_DEPTH) throw new KerasConfigError('call arguments nest too deeply');
  if (Array.isArray(value)) {
    for (const item of value) collectKerasTensors(item, refs, depth + 1);
  } else if (isObject(value)) {
    const holder = value.class_name === '__keras_tensor__' ? object(value.config, 'a Keras tensor') : value;
    if (holder.keras_history !== undefined) refs.push(historyRef(holder.keras_history, 'keras_history'));
  }
}

function historyRef(value: unknown, what: string): TensorRef {
  const entry = list(value, what);
  const [layer, node, tensor] = entry;
  if (typeof layer !== 'string' || !Number.isInteger(node) || !Number.isInteger(tensor) || (node as number) < 0 || (tensor as number) < 0) {
    throw new KerasConfigError(`${what} ${JSON.stringify(value).slice(0, 80)} is not [layer, node, tensor]`);
  }
  return { layer, node: node as number, tensor: tensor as number };
}

/** input_layers / output_layers: a list of [layer, node, tensor], or Keras 3's single one. */
function readEndpoints(value: unknown, what: string): TensorRef[] {
  const entries = list(value, what);
  if (typeof entries[0] === 'string') return [historyRef(entries, what)];
  if (entries.length === 0) throw new KerasConfigError(`${what} is empty`);
  return entries.map((entry) => historyRef(entry, what));
}

/** One sample's shape from an input layer's (or first layer's) batch shape. */
function declaredShape(layer: KerasLayer, fallback?: unknown): (number | null)[] {
  const config = layer.config;
  const batchShape = config.batch_input_shape ?? config.batch_shape ?? fallback;
  if (Array.isArray(batchShape)) return batchShape.slice(1).map((size, i) => dimension(size, layer.name, i));
  if (Array.isArray(config.input_shape)) return config.input_shape.map((size, i) => dimension(size, layer.name, i));
  throw new KerasConfigError(`the input shape is not declared (layer "${layer.name}" has no batch_input_shape)`);
}

function dimension(size: unknown, layer: string, axis: number): number | null {
  if (size === null) return null;
  if (Number.isInteger(size) && (size as number) > 0) return size as number;
  throw new KerasConfigError(`layer "${layer}" declares input size ${JSON.stringify(size)} on axis ${axis + 1}`);
}

function object(value: unknown, what: string): Readonly<Record<string, unknown>> {
  if (!isObject(value)) throw new KerasConfigError(`${what} is not an object`);
  return value;
}

function list(value: unknown, what: string): readonly unknown[] {
  if (!Array.isArray(value)) throw new KerasConfigError(`${what} is not a list`);
  return value;
}

function string(value: unknown, what: string): string {
  if (typeof value !== 'string') throw new KerasConfigError(`${what} is not named`);
  return value;
}

export function isObject(value: unknown): value is Readonly<Record<string, unknown>> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
