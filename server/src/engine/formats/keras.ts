import { CheckpointError } from '../errors';
import { FileSource } from '../io/byteSource';
import type { Checkpoint, FormatReader } from './checkpoint';
import { Hdf5File, hasHdf5Signature, type Hdf5Object, type Hdf5Value } from './hdf5';
import type { Tensor } from './tensor';
import { ZIP_MAGIC, ZipArchive } from './zip';

/**
 * Keras checkpoints, read through the HDF5 reader (hdf5.ts):
 *
 * - Keras 2 `model.save_weights('x.h5')`: the root's `layer_names` attribute lists the layers;
 *   each layer's group lists its weights in `weight_names`, stored as datasets at those paths
 *   inside the group. Tensors are named as Keras names the weights (`dense/kernel:0`), in
 *   layer_names order.
 * - Hugging Face TF shards (`tf_model-00001-of-00002.h5`, written by transformers'
 *   save_pretrained): the root's `layer_names` lists weights stored as datasets at those paths.
 * - Keras 2 `model.save('x.h5')`: the same under group `model_weights`, with `model_config` and
 *   `training_config` (JSON) on the root. The optimizer's weights (`optimizer_weights`) are
 *   training state, not model weights: they are counted in a warning and not listed, as the
 *   PyTorch reader does with optimizer state, so that lineage compares weights only.
 * - Keras 3 `.weights.h5`: `layers/<name>/vars/0`, `vars/1`, ... (nested models repeat
 *   `layers/`). Every dataset is a tensor named by its path without the `layers` components
 *   (`layers/dense/vars/0` → `dense/vars/0`), in natural order (`vars/10` after `vars/9`).
 *   The top-level `optimizer` group is training state, counted and not listed.
 * - Keras 3 `.keras`: a zip of metadata.json, config.json and model.weights.h5 (the layout
 *   above). Keras stores the weights uncompressed, and they are then read in place by range;
 *   a deflated member is inflated in memory, up to zip.ts's MAX_INFLATED_MEMBER.
 *
 * Splitting of attributes over 64 KB into `name0`, `name1`, ... is undone as Keras does.
 * Shapes are kept as stored (dense kernels in×out, convolution kernels HWIO).
 *
 * Metadata: the root's attributes (Keras 2: keras_version, backend; the structural
 * layer_names is left out), `model_config` summarised as its class, name and layers, and
 * `training_config` parsed; for `.keras`, metadata.json's entries, config.json summarised the
 * same way and its `compile_config`.
 */

const KERAS3_WEIGHTS_MEMBER = 'model.weights.h5';
const KERAS3_JSON_MEMBERS = ['metadata.json', 'config.json'];
/** metadata.json and config.json are small; larger members are not parsed. */
const MAX_JSON_BYTES = 16 * 1024 * 1024;
/** Deepest group nesting followed in a Keras 3 file; real models nest a few levels. */
const MAX_GROUP_DEPTH = 64;
/** Keras 3 puts the optimizer's variables here; they are not model weights. */
const KERAS3_OPTIMIZER_GROUP = 'optimizer';
const KERAS2_OPTIMIZER_GROUP = 'optimizer_weights';

export const kerasH5Reader: FormatReader = {
  name: 'Keras HDF5',
  sniff: (filePath, head) => /\.(h5|hdf5)$/i.test(filePath) || hasHdf5Signature(head),
  open: openKerasH5,
};

export const kerasReader: FormatReader = {
  name: 'Keras',
  sniff: (filePath, head) => filePath.toLowerCase().endsWith('.keras') || firstZipMemberIsKerasJson(head),
  open: openKerasArchive,
};

/** Keras 3 writes metadata.json first, then config.json: a zip starting so is a `.keras` file. */
function firstZipMemberIsKerasJson(head: Buffer): boolean {
  const NAME_LENGTH_AT = 26;
  const NAME_AT = 30;
  if (head.length < NAME_AT || !head.subarray(0, ZIP_MAGIC.length).equals(ZIP_MAGIC)) return false;
  const nameEnd = NAME_AT + head.readUInt16LE(NAME_LENGTH_AT);
  return nameEnd <= head.length && KERAS3_JSON_MEMBERS.includes(head.toString('latin1', NAME_AT, nameEnd));
}

// ---------------------------------------------------------------------------------------
// Opening

async function openKerasH5(filePath: string): Promise<Checkpoint> {
  const file = await FileSource.open(filePath);
  try {
    const weights = await readWeights(await Hdf5File.open(file));
    return { path: filePath, format: 'keras-h5', ...weights, close: () => file.close() };
  } catch (error) {
    await file.close();
    throw error;
  }
}

async function openKerasArchive(filePath: string): Promise<Checkpoint> {
  const file = await FileSource.open(filePath);
  try {
    const archive = await ZipArchive.open(file);
    if (!archive.members.has(KERAS3_WEIGHTS_MEMBER)) {
      throw new CheckpointError(filePath, `no ${KERAS3_WEIGHTS_MEMBER} in the archive: not a Keras 3 model, or one saved without weights`);
    }
    const warnings: string[] = [];
    const metadataJson = await readJsonMember(archive, 'metadata.json', warnings);
    const configJson = await readJsonMember(archive, 'config.json', warnings);
    const weights = await readWeights(await Hdf5File.open(await archive.member(KERAS3_WEIGHTS_MEMBER)));
    const metadata: Record<string, unknown> = { ...weights.metadata };
    if (isObject(metadataJson)) Object.assign(metadata, Object.fromEntries(Object.entries(metadataJson)));
    if (configJson !== undefined) {
      const summary = summarizeModelConfig(configJson);
      if (summary) metadata.model_config = summary;
      else warnings.push('config.json does not describe a model');
      if (isObject(configJson) && configJson.compile_config !== undefined) metadata.compile_config = configJson.compile_config;
    }
    return {
      path: filePath,
      format: 'keras',
      metadata,
      tensors: weights.tensors,
      ...(configJson === undefined ? {} : { modelConfig: configJson }),
      warnings: [...warnings, ...weights.warnings],
      close: () => file.close(),
    };
  } catch (error) {
    await file.close();
    throw error;
  }
}

/** A JSON member's value; a missing, oversized or invalid member is a warning, since the weights are still readable. */
async function readJsonMember(archive: ZipArchive, name: string, warnings: string[]): Promise<unknown> {
  const member = archive.members.get(name);
  if (!member) {
    warnings.push(`the archive has no ${name}`);
    return undefined;
  }
  if (member.size > MAX_JSON_BYTES) {
    warnings.push(`${name} (${member.size} bytes) is too large to read`);
    return undefined;
  }
  const source = await archive.member(name);
  return parseJson(await source.read(0, source.size), name, warnings);
}

function parseJson(bytes: Buffer | string, what: string, warnings: string[]): unknown {
  try {
    return JSON.parse(bytes.toString());
  } catch (error) {
    warnings.push(`${what} is not valid JSON: ${(error as Error).message}`);
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------
// The weights file, whichever Keras wrote it

interface KerasWeights {
  readonly tensors: readonly Tensor[];
  readonly metadata: Record<string, unknown>;
  /** Keras 2 `model.save`'s model_config, parsed. */
  readonly modelConfig?: unknown;
  readonly warnings: readonly string[];
}

/** Collects tensors under unique names, as the other readers do. */
class TensorList {
  readonly tensors: Tensor[] = [];
  readonly warnings: string[] = [];
  private readonly names = new Set<string>();

  add(tensor: Tensor): void {
    if (this.names.has(tensor.name)) {
      this.warnings.push(`two tensors are named "${tensor.name}"; only the first is listed`);
      return;
    }
    this.names.add(tensor.name);
    this.tensors.push(tensor);
  }

  skippedTrainingState(count: number, group: string): void {
    if (count > 0) this.warnings.push(`${count} optimizer tensors (under ${group}) are not model weights and are not listed`);
  }
}

async function readWeights(file: Hdf5File): Promise<KerasWeights> {
  const root = await file.root();
  if (await hasListAttribute(root, 'layer_names')) return readKeras2(file, root, root);
  const modelWeights = await root.child('model_weights');
  if (modelWeights && (await hasListAttribute(modelWeights, 'layer_names'))) return readKeras2(file, root, modelWeights);
  if ((await root.child('layers')) || (await root.child('vars'))) return readKeras3(file, root);
  return file.fail('an HDF5 file, but not Keras weights: it has no layer_names attribute, model_weights group or layers group');
}

async function readKeras2(file: Hdf5File, root: Hdf5Object, weightsGroup: Hdf5Object): Promise<KerasWeights> {
  const list = new TensorList();
  for (const layerName of await listAttribute(file, weightsGroup, 'layer_names')) {
    const layer = await file.resolve(layerName, weightsGroup);
    if (!layer) file.fail(`layer "${layerName}" is named in layer_names but has no group`);
    // Hugging Face's sharded TF checkpoints list weights, not layers, in layer_names.
    if (layer.isDataset) {
      list.add(layer.dataset().tensor(layerName));
      continue;
    }
    for (const weightName of await listAttribute(file, layer, 'weight_names')) {
      const weight = await file.resolve(weightName, layer);
      if (!weight?.isDataset) file.fail(`weight "${weightName}" of layer "${layerName}" is named in weight_names but not stored`);
      list.add(weight.dataset().tensor(weightName));
    }
  }
  const optimizer = await root.child(KERAS2_OPTIMIZER_GROUP);
  if (optimizer) list.skippedTrainingState((await listAttribute(file, optimizer, 'weight_names')).length, KERAS2_OPTIMIZER_GROUP);
  const { metadata, modelConfig, warnings } = await rootMetadata(root, weightsGroup === root);
  return { tensors: list.tensors, metadata, ...(modelConfig === undefined ? {} : { modelConfig }), warnings: [...warnings, ...list.warnings] };
}

async function readKeras3(file: Hdf5File, root: Hdf5Object): Promise<KerasWeights> {
  const list = new TensorList();
  const visited = new Set<number>([root.address]);
  let optimizerTensors = 0;

  /** Visits every dataset below `group` once, in natural name order; hard links back up are not followed. */
  const walk = async (group: Hdf5Object, path: readonly string[], found: (dataset: Hdf5Object, path: readonly string[]) => void): Promise<void> => {
    if (path.length > MAX_GROUP_DEPTH) file.fail(`groups nest deeper than ${MAX_GROUP_DEPTH} levels at "${path.join('/')}"`);
    const links = [...(await group.links())].sort((a, b) => naturalCompare(a.name, b.name));
    for (const link of links) {
      const childPath = [...path, link.name];
      if (visited.has(link.address)) {
        list.warnings.push(`"${childPath.join('/')}" links to an object already read; it is not read again`);
        continue;
      }
      visited.add(link.address);
      const child = await file.object(link.address);
      if (path.length === 0 && link.name === KERAS3_OPTIMIZER_GROUP) await walk(child, childPath, () => optimizerTensors++);
      else if (child.isDataset) found(child, childPath);
      else if (child.isGroup) await walk(child, childPath, found);
    }
  };
  await walk(root, [], (dataset, path) => list.add(dataset.dataset().tensor(path.filter((part) => part !== 'layers').join('/'))));
  list.skippedTrainingState(optimizerTensors, KERAS3_OPTIMIZER_GROUP);
  const { metadata, warnings } = await rootMetadata(root, false);
  return { tensors: list.tensors, metadata, warnings: [...warnings, ...list.warnings] };
}

/** Orders names with runs of digits compared as numbers: "vars/9" before "vars/10". */
function naturalCompare(a: string, b: string): number {
  const partsA = a.match(/\d+|\D+/g) ?? [];
  const partsB = b.match(/\d+|\D+/g) ?? [];
  for (let i = 0; i < Math.min(partsA.length, partsB.length); i++) {
    const x = partsA[i]!;
    const y = partsB[i]!;
    if (x === y) continue;
    const bothNumbers = /^\d/.test(x) && /^\d/.test(y);
    if (bothNumbers && Number(x) !== Number(y)) return Number(x) - Number(y);
    return x < y ? -1 : 1;
  }
  return partsA.length - partsB.length;
}

// ---------------------------------------------------------------------------------------
// Attributes

/** Keras splits a list attribute over 64 KB into name0, name1, ...; either form counts. */
async function hasListAttribute(object: Hdf5Object, name: string): Promise<boolean> {
  const attributes = await object.attributes();
  return attributes.has(name) || attributes.has(`${name}0`);
}

function isListAttribute(name: string, base: string): boolean {
  return name === base || new RegExp(`^${base}\\d+$`).test(name);
}

/** A list-of-names attribute, joined from its pieces as Keras's load_attributes_from_hdf5_group does. */
async function listAttribute(file: Hdf5File, object: Hdf5Object, name: string): Promise<string[]> {
  const attributes = await object.attributes();
  const pieces: Hdf5Value[] = [];
  const whole = attributes.get(name);
  if (whole) {
    pieces.push(await whole.read());
  } else {
    for (let chunk = 0; attributes.has(`${name}${chunk}`); chunk++) pieces.push(await attributes.get(`${name}${chunk}`)!.read());
  }
  if (pieces.length === 0) file.fail(`object at ${object.address} has no ${name} attribute`);
  const names: string[] = [];
  for (const piece of pieces) {
    if (typeof piece === 'string') names.push(piece);
    // Keras writes an empty list, which numpy turns into an empty float64 array.
    else if (Array.isArray(piece) && piece.every((item) => typeof item === 'string')) names.push(...(piece as string[]));
    else file.fail(`attribute ${name} of object at ${object.address} is ${JSON.stringify(piece)}, not a list of names`);
  }
  return names;
}

/**
 * The root's attributes as metadata, JSON configurations parsed and Keras 2's layer list left
 * out; the model configuration also whole, for the executor.
 */
async function rootMetadata(root: Hdf5Object, layerListOnRoot: boolean): Promise<{ metadata: Record<string, unknown>; modelConfig?: unknown; warnings: string[] }> {
  const metadata: Record<string, unknown> = {};
  let modelConfig: unknown;
  const warnings: string[] = [];
  for (const [name, attribute] of await root.attributes()) {
    if (layerListOnRoot && isListAttribute(name, 'layer_names')) continue;
    let value: Hdf5Value;
    try {
      value = await attribute.read();
    } catch (error) {
      if (!(error instanceof CheckpointError)) throw error;
      warnings.push(`root attribute "${name}" is not read: ${error.problem}`);
      continue;
    }
    if (name === 'model_config' && typeof value === 'string') {
      modelConfig = parseJson(value, 'model_config', warnings);
      const summary = summarizeModelConfig(modelConfig);
      if (summary) metadata.model_config = summary;
    } else if (name === 'training_config' && typeof value === 'string') {
      const parsed = parseJson(value, 'training_config', warnings);
      if (parsed !== undefined) metadata.training_config = parsed;
    } else {
      metadata[name] = value;
    }
  }
  return { metadata, modelConfig, warnings };
}

interface ModelSummary {
  class_name?: string;
  name?: string;
  /** "name (ClassName)" per layer, in the configuration's order. */
  layers?: string[];
}

/** A model configuration (Keras 2 model_config or Keras 3 config.json) as its class, name and layers. */
function summarizeModelConfig(value: unknown): ModelSummary | undefined {
  if (!isObject(value)) return undefined;
  const config = isObject(value.config) ? value.config : {};
  const summary: ModelSummary = {};
  if (typeof value.class_name === 'string') summary.class_name = value.class_name;
  const name = config.name ?? value.name;
  if (typeof name === 'string') summary.name = name;
  if (Array.isArray(config.layers)) {
    summary.layers = config.layers.filter(isObject).map((layer) => {
      const layerConfig = isObject(layer.config) ? layer.config : {};
      const layerName = typeof layerConfig.name === 'string' ? layerConfig.name : typeof layer.name === 'string' ? layer.name : '?';
      return `${layerName} (${typeof layer.class_name === 'string' ? layer.class_name : '?'})`;
    });
  }
  return Object.keys(summary).length > 0 ? summary : undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
