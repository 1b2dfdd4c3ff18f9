import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { CancelledError, CheckpointError, describeError } from '../errors';
import { BufferSource, FileSource, type ByteSource } from '../io/byteSource';
import type { Checkpoint, FormatName, FormatReader } from './checkpoint';
import { DTYPE_BYTES, type DType } from './dtype';
import {
  NumpyArray,
  NumpyDType,
  PickleGlobal,
  PickleObject,
  TorchDType,
  TorchEmbeddedStorage,
  TorchSkippedTensor,
  TorchStorage,
  TorchStorageType,
  TorchTensor,
  unpickleSource,
  type PickleValue,
} from './pickle';
import { looksLikeTar, readTarMembers } from './tar';
import { StoredTensor, rowMajorStrides, type Tensor } from './tensor';
import { ZIP_MAGIC, ZipArchive } from './zip';

/**
 * PyTorch checkpoints: torch.save's zip format (1.6 and later), its legacy raw-pickle format
 * (_use_new_zipfile_serialization=False), the tar format of torch before 0.4, and Hugging Face's
 * sharded pytorch_model.bin.index.json. Only pickles and indexes are read on opening; tensor
 * values stay on disk until a tensor is read.
 */
export const pytorchReader: FormatReader = {
  name: 'PyTorch',
  sniff: sniffPytorch,
  open: (filePath) => (isShardIndex(filePath) ? openShardIndex(filePath) : openCheckpointFile(filePath)),
};

const EXTENSIONS = ['.pt', '.pth', '.bin', '.ckpt', '.pkl', '.tar'];
const SHARD_INDEX_SUFFIX = '.bin.index.json';
/** Written by torch.save's legacy format before everything else. */
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL_VERSION = 1001;
const MAX_INDEX_BYTES = 64 * 1024 * 1024;

function isShardIndex(filePath: string): boolean {
  return filePath.toLowerCase().endsWith(SHARD_INDEX_SUFFIX);
}

function sniffPytorch(filePath: string, head: Buffer): boolean {
  const lower = filePath.toLowerCase();
  if (isShardIndex(lower) || EXTENSIONS.some((extension) => lower.endsWith(extension))) return true;
  if (lower.endsWith('.npz')) return false; // numpy archives are zips too
  return head.subarray(0, 4).equals(ZIP_MAGIC) || looksLikePickle(head) || looksLikeTar(head);
}

/** A PROTO opcode for protocol 2-5, which every pickle torch.save writes begins with. */
function looksLikePickle(head: Buffer): boolean {
  return head.length >= 2 && head[0] === 0x80 && head[1]! >= 2 && head[1]! <= 5;
}

// ---------------------------------------------------------------------------------------------
// Opening one file

/** A container's pickle and the way to its storages' bytes. */
interface LoadedPickle {
  readonly format: FormatName;
  readonly root: PickleValue;
  readonly warnings: readonly string[];
  readonly littleEndian: boolean;
  /** The bytes of a storage, sized as its persistent id declares. */
  storageBytes(storage: TorchStorage): ByteSource;
}

async function openCheckpointFile(filePath: string): Promise<Checkpoint> {
  const source = await FileSource.open(filePath);
  try {
    const loaded = await loadContainer(source);
    const found = findTensors(loaded.root, filePath);
    const warnings = [...loaded.warnings, ...found.warnings];
    const tensors = found.tensors.flatMap((named) => {
      const tensor = toTensor(named, loaded, filePath, warnings);
      return tensor ? [tensor] : [];
    });
    return { path: filePath, format: loaded.format, metadata: found.metadata, tensors, warnings, close: () => source.close() };
  } catch (error) {
    await source.close();
    throw asCheckpointError(error, filePath);
  }
}

function asCheckpointError(error: unknown, file: string): Error {
  if (error instanceof CheckpointError || error instanceof CancelledError) return error;
  return new CheckpointError(file, describeError(error));
}

async function loadContainer(source: ByteSource): Promise<LoadedPickle> {
  if (source.size === 0) throw new CheckpointError(source.name, 'the file is empty');
  const head = await source.read(0, Math.min(source.size, 512));
  if (head.subarray(0, 4).equals(ZIP_MAGIC)) return loadZip(source);
  if (looksLikeTar(head)) return loadTar(source);
  if (head[0] === 0x80) return loadRawPickle(source);
  throw new CheckpointError(source.name, 'not a PyTorch checkpoint: no zip, tar or pickle signature at the start');
}

// ---------------------------------------------------------------------------------------------
// Persistent ids shared by the zip and legacy formats

/**
 * Resolves torch.save's persistent ids, ('storage', storage type, key, location, numel) and the
 * legacy format's extra view metadata, remembering each storage's element type and size so the
 * container can check its bytes.
 */
class StorageRegistry {
  readonly storages = new Map<string, TorchStorage>();

  constructor(private readonly file: string) {}

  private fail(problem: string): never {
    throw new CheckpointError(this.file, problem);
  }

  load(id: PickleValue): PickleValue {
    if (!Array.isArray(id) || id.length === 0) this.fail('a persistent id is not a tuple');
    const kind = textOf(id[0]);
    // Legacy files save each nn.Module class with its source code; the class is all that matters.
    if (kind === 'module') return id[1] ?? null;
    if (kind !== 'storage') this.fail(`unknown persistent id type "${String(kind)}"`);
    const [, storageType, rawKey, location, rawNumel, view] = id;
    const dtype = storageType instanceof TorchStorageType || storageType instanceof TorchDType ? storageType.dtype : undefined;
    if (!dtype) this.fail(`unsupported storage type ${storageType instanceof PickleGlobal ? storageType.qualifiedName : 'in a persistent id'}`);
    const key = keyText(rawKey);
    if (key === undefined) this.fail('a storage key is not a string');
    if (typeof rawNumel !== 'number' || !Number.isSafeInteger(rawNumel) || rawNumel < 0) this.fail(`storage "${key}" has an invalid size`);
    const storage = new TorchStorage(key, dtype, rawNumel, textOf(location) ?? 'cpu', this.viewOf(view, key));
    const known = this.storages.get(key);
    if (known && known.numel * DTYPE_BYTES[known.dtype] !== storage.numel * DTYPE_BYTES[storage.dtype]) {
      this.fail(`storage "${key}" is declared twice with different sizes`);
    }
    if (!known) this.storages.set(key, storage);
    return storage;
  }

  /** Legacy view metadata (view key, offset, size), in elements. */
  private viewOf(view: PickleValue | undefined, key: string): TorchStorage['view'] {
    if (view === undefined || view === null) return undefined;
    const [, offset, numel] = Array.isArray(view) ? view : [];
    if (typeof offset !== 'number' || typeof numel !== 'number' || offset < 0 || numel < 0) this.fail(`storage "${key}" has a damaged view`);
    return { offset, numel };
  }
}

function textOf(value: PickleValue | undefined): string | undefined {
  if (typeof value === 'string') return value;
  if (value instanceof Uint8Array) return Buffer.from(value).toString('latin1');
  return undefined;
}

function elementBytes(storage: TorchStorage): number {
  return storage.numel * DTYPE_BYTES[storage.dtype];
}

/** A storage's bytes within its root storage's bytes, for legacy views. */
function viewBytes(root: ByteSource, storage: TorchStorage): ByteSource {
  if (!storage.view) return root;
  const width = DTYPE_BYTES[storage.dtype];
  return root.slice(storage.view.offset * width, storage.view.numel * width, root.name);
}

function storageLookup(file: string, sources: ReadonlyMap<string, ByteSource>): (storage: TorchStorage) => ByteSource {
  return (storage) => {
    const root = sources.get(storage.key);
    if (!root) throw new CheckpointError(file, `storage "${storage.key}" is not in the file`);
    return viewBytes(root, storage);
  };
}

// ---------------------------------------------------------------------------------------------
// Zip format: <prefix>/data.pkl, <prefix>/data/<key>, optional <prefix>/byteorder

async function loadZip(source: ByteSource): Promise<LoadedPickle> {
  const archive = await ZipArchive.open(source);
  const pickleName = [...archive.members.keys()]
    .filter((name) => name === 'data.pkl' || name.endsWith('/data.pkl'))
    .sort((a, b) => a.length - b.length)[0];
  if (!pickleName) throw new CheckpointError(source.name, 'zip archive has no data.pkl record: not a PyTorch checkpoint');
  const prefix = pickleName.slice(0, -'data.pkl'.length);
  const littleEndian = await readByteOrder(archive, `${prefix}byteorder`, source.name);
  const registry = new StorageRegistry(source.name);
  const result = await unpickleSource(await archive.member(pickleName), 0, { persistentLoad: (id) => registry.load(id) });

  const sources = new Map<string, ByteSource>();
  for (const [key, storage] of registry.storages) {
    const recordName = `${prefix}data/${key}`;
    const record = archive.members.get(recordName);
    if (!record) throw new CheckpointError(source.name, `storage "${key}" has no record "${recordName}"`);
    const needed = elementBytes(storage);
    if (record.size < needed) {
      throw new CheckpointError(
        source.name,
        `record "${recordName}" holds ${record.size} bytes but its storage of ${storage.numel} ${storage.dtype} elements needs ${needed}`,
      );
    }
    // Local headers are checked when a tensor is first read, so listing reads only the pickle.
    sources.set(key, new DeferredSource(`${source.name}[${recordName}]`, needed, () => archive.member(recordName)));
  }
  return { format: 'pytorch-zip', root: result.value, warnings: result.warnings, littleEndian, storageBytes: storageLookup(source.name, sources) };
}

async function readByteOrder(archive: ZipArchive, recordName: string, file: string): Promise<boolean> {
  const record = archive.members.get(recordName);
  if (!record) return true;
  const member = await archive.member(recordName);
  const order = (await member.read(0, Math.min(member.size, 16))).toString('latin1').trim();
  if (order !== 'little' && order !== 'big') throw new CheckpointError(file, `unknown byte order "${order}"`);
  return order === 'little';
}

/** A range whose underlying source is opened on first read (zip members check their local header then). */
class DeferredSource implements ByteSource {
  private opened: Promise<ByteSource> | undefined;

  constructor(
    readonly name: string,
    readonly size: number,
    private readonly openSource: () => Promise<ByteSource>,
  ) {}

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    return (await this.underlying()).read(offset, length);
  }

  slice(offset: number, length: number, name?: string): ByteSource {
    this.checkRange(offset, length);
    return new DeferredSource(name ?? this.name, length, async () => (await this.underlying()).slice(offset, length, name));
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new CheckpointError(this.name, `range ${offset}+${length} lies outside the ${this.size} bytes available`);
    }
  }

  private underlying(): Promise<ByteSource> {
    this.opened ??= this.openSource();
    return this.opened;
  }
}

// ---------------------------------------------------------------------------------------------
// Legacy raw-pickle format: magic, protocol version, sys_info, the object, the storage keys,
// then each storage as an int64 element count and its little-endian elements.

async function loadRawPickle(source: ByteSource): Promise<LoadedPickle> {
  const magic = await unpickleSource(source, 0);
  if (magic.value !== LEGACY_MAGIC) {
    if (typeof magic.value === 'number' || typeof magic.value === 'bigint') {
      throw new CheckpointError(source.name, `wrong magic number ${magic.value.toString(16)}: not a PyTorch checkpoint`);
    }
    // A plain pickle (pickle.dump of a dict of numpy arrays, say): everything is in the pickle.
    return { format: 'pytorch-pickle', root: magic.value, warnings: magic.warnings, littleEndian: true, storageBytes: storageLookup(source.name, new Map()) };
  }
  const version = await unpickleSource(source, magic.end);
  if (version.value !== LEGACY_PROTOCOL_VERSION) {
    throw new CheckpointError(source.name, `unsupported legacy PyTorch protocol version ${String(version.value)}`);
  }
  const sysInfo = await unpickleSource(source, version.end);
  const registry = new StorageRegistry(source.name);
  const main = await unpickleSource(source, sysInfo.end, { persistentLoad: (id) => registry.load(id) });
  const keyList = await unpickleSource(source, main.end);
  const keys = keyList.value;
  if (!Array.isArray(keys) || !keys.every((key): key is string => typeof key === 'string')) {
    throw new CheckpointError(source.name, 'the list of storage keys after the pickle is damaged');
  }
  const sources = await locateLegacyStorages(source, keyList.end, keys, registry.storages);
  return {
    format: 'pytorch-pickle',
    root: main.value,
    warnings: [...sysInfo.warnings, ...main.warnings],
    littleEndian: true, // the legacy writer always stores little-endian elements
    storageBytes: storageLookup(source.name, sources),
  };
}

/** Walks the storage records by their headers alone, recording where each one's bytes lie. */
async function locateLegacyStorages(
  source: ByteSource,
  start: number,
  keys: readonly string[],
  storages: ReadonlyMap<string, TorchStorage>,
): Promise<Map<string, ByteSource>> {
  const fail: (problem: string) => never = (problem) => {
    throw new CheckpointError(source.name, problem);
  };
  const sources = new Map<string, ByteSource>();
  const headers = new HeaderWindow(source);
  let offset = start;
  for (const key of keys) {
    const storage = storages.get(key) ?? fail(`storage "${key}" is listed but no tensor uses it, so its element size is unknown`);
    if (offset + 8 > source.size) fail(`truncated: storage "${key}" should start at byte ${offset} but the file has only ${source.size} bytes`);
    const numel = await headers.int64(offset);
    if (numel < BigInt(storage.numel)) {
      fail(`storage "${key}" at byte ${offset} holds ${numel} elements but its tensors need ${storage.numel}`);
    }
    const length = Number(numel) * DTYPE_BYTES[storage.dtype];
    if (!Number.isSafeInteger(length) || offset + 8 + length > source.size) {
      fail(`truncated: storage "${key}" needs bytes ${offset + 8}..${offset + 8 + length} but the file has only ${source.size}`);
    }
    sources.set(key, source.slice(offset + 8, elementBytes(storage), `${source.name}[storage ${key}]`));
    offset += 8 + length;
  }
  for (const key of storages.keys()) {
    if (!sources.has(key)) fail(`storage "${key}" is used by a tensor but missing from the storage list`);
  }
  return sources;
}

/**
 * Reads the 8-byte storage headers through a small window, so that thousands of small storages
 * packed together cost a few reads instead of one each, while a large storage is jumped over.
 */
class HeaderWindow {
  private static readonly SIZE = 16 * 1024;
  private start = 0;
  private bytes: Buffer = Buffer.alloc(0);

  constructor(private readonly source: ByteSource) {}

  async int64(offset: number): Promise<bigint> {
    if (offset < this.start || offset + 8 > this.start + this.bytes.length) {
      this.start = offset;
      this.bytes = await this.source.read(offset, Math.min(HeaderWindow.SIZE, this.source.size - offset));
    }
    return this.bytes.readBigInt64LE(offset - this.start);
  }
}

// ---------------------------------------------------------------------------------------------
// Tar format (torch < 0.4): members sys_info, pickle, tensors and storages.

async function loadTar(source: ByteSource): Promise<LoadedPickle> {
  const members = await readTarMembers(source);
  const member = (name: string): ByteSource => {
    const found = members.get(name);
    if (!found) throw new CheckpointError(source.name, `tar archive has no "${name}" member: not a PyTorch checkpoint`);
    return found;
  };
  const { roots, storages } = await readTarStorages(member('storages'));
  const tensors = await readTarTensors(member('tensors'), storages);
  const main = await unpickleSource(member('pickle'), 0, {
    persistentLoad: (id) => {
      // Module classes are saved as (class, source file, source); the rest by their key.
      if (Array.isArray(id)) return id[0] ?? null;
      const key = textOf(id);
      const found = key === undefined ? undefined : tensors.get(key) ?? storages.get(key);
      if (!found) throw new CheckpointError(source.name, `the pickle refers to tensor or storage "${String(key)}", which the archive lacks`);
      return found;
    },
  });
  return { format: 'pytorch-tar', root: main.value, warnings: main.warnings, littleEndian: true, storageBytes: storageLookup(source.name, roots) };
}

async function readTarStorages(
  member: ByteSource,
): Promise<{ roots: Map<string, ByteSource>; storages: Map<string, TorchStorage> }> {
  const fail: (problem: string) => never = (problem) => {
    throw new CheckpointError(member.name, problem);
  };
  const roots = new Map<string, ByteSource>();
  const storages = new Map<string, TorchStorage>();
  const header = await unpickleSource(member, 0);
  const count = typeof header.value === 'number' ? header.value : fail('the storage count is damaged');
  let offset = header.end;
  for (let i = 0; i < count; i++) {
    const record = await unpickleSource(member, offset);
    const [rawKey, location, storageType] = Array.isArray(record.value) ? record.value : [];
    const key = keyText(rawKey) ?? fail(`storage record ${i} has no key`);
    const dtype = storageType instanceof TorchStorageType && storageType.dtype ? storageType.dtype : fail(`storage "${key}" has an unknown type`);
    if (record.end + 8 > member.size) fail(`truncated: storage "${key}" has no element count`);
    const numel = Number((await member.read(record.end, 8)).readBigInt64LE(0));
    const length = numel * DTYPE_BYTES[dtype];
    if (!Number.isSafeInteger(length) || length < 0 || record.end + 8 + length > member.size) {
      fail(`truncated: storage "${key}" needs ${length} bytes at byte ${record.end + 8} of a ${member.size}-byte member`);
    }
    roots.set(key, member.slice(record.end + 8, length, `${member.name}[storage ${key}]`));
    storages.set(key, new TorchStorage(key, dtype, numel, textOf(location) ?? 'cpu'));
    offset = record.end + 8 + length;
  }
  const views = await unpickleSource(member, offset);
  for (const view of Array.isArray(views.value) ? views.value : []) {
    const [target, rootKey, viewOffset, numel] = Array.isArray(view) ? view : [];
    const root = storages.get(keyText(rootKey) ?? '');
    const targetKey = keyText(target);
    if (!root || targetKey === undefined || typeof viewOffset !== 'number' || typeof numel !== 'number') fail('a storage view is damaged');
    storages.set(targetKey, new TorchStorage(root.key, root.dtype, root.numel, root.location, { offset: viewOffset, numel }));
  }
  return { roots, storages };
}

/** Tensor records: pickled (key, storage key, type), then int32 ndim, 4 unused bytes, sizes, strides, offset. */
async function readTarTensors(member: ByteSource, storages: ReadonlyMap<string, TorchStorage>): Promise<Map<string, TorchTensor>> {
  const fail: (problem: string) => never = (problem) => {
    throw new CheckpointError(member.name, problem);
  };
  const tensors = new Map<string, TorchTensor>();
  const header = await unpickleSource(member, 0);
  const count = typeof header.value === 'number' ? header.value : fail('the tensor count is damaged');
  let offset = header.end;
  for (let i = 0; i < count; i++) {
    const record = await unpickleSource(member, offset);
    const [rawKey, storageKey] = Array.isArray(record.value) ? record.value : [];
    const key = keyText(rawKey) ?? fail(`tensor record ${i} has no key`);
    const storage = storages.get(keyText(storageKey) ?? '') ?? fail(`tensor "${key}" refers to a missing storage`);
    const ndim = (await member.read(record.end, 8)).readInt32LE(0);
    if (ndim < 0 || ndim > 64) fail(`tensor "${key}" has ${ndim} dimensions`);
    const layout = await member.read(record.end + 8, 16 * ndim + 8);
    const numbers = Array.from({ length: 2 * ndim + 1 }, (_, j) => Number(layout.readBigInt64LE(8 * j)));
    tensors.set(key, new TorchTensor(storage, numbers[2 * ndim]!, numbers.slice(0, ndim), numbers.slice(ndim, 2 * ndim)));
    offset = record.end + 8 + layout.length;
  }
  return tensors;
}

function keyText(value: PickleValue | undefined): string | undefined {
  return typeof value === 'number' ? String(value) : textOf(value);
}

// ---------------------------------------------------------------------------------------------
// Finding the weights in the unpickled object

type TensorValue = TorchTensor | TorchSkippedTensor | NumpyArray | PickleObject;

interface NamedValue {
  readonly name: string;
  readonly value: TensorValue;
}

interface FoundTensors {
  readonly tensors: readonly NamedValue[];
  readonly metadata: Record<string, unknown>;
  readonly warnings: readonly string[];
}

/** Keys under which training scripts keep the weights, most specific first. */
const STATE_DICT_KEYS = [
  'state_dict', 'model_state_dict', 'model_state', 'model', 'module', 'net', 'network', 'weights', 'params',
  'ema', 'model_ema', 'state_dict_ema', 'ema_state_dict',
];
/** Keys holding optimizer and training-loop state: tensors there are not weights. */
const TRAINING_STATE_KEYS = new Set([
  'optimizer', 'optimizers', 'optimizer_states', 'optimizer_state', 'optimizer_state_dict', 'optim', 'opt',
  'scheduler', 'schedulers', 'lr_scheduler', 'lr_schedulers', 'scheduler_state_dict', 'scaler', 'grad_scaler',
  'amp', 'callbacks', 'loops', 'rng_state', 'rng_states', 'random_state',
]);
/** Deeper than any real object graph, shallow enough for recursion. */
const MAX_WALK_DEPTH = 1000;
/** Visits of the object graph, far above what real checkpoints need. */
const MAX_WALK_VISITS = 2_000_000;
/**
 * Visits of containers already seen by another path. Real checkpoints share a few (a tied
 * submodule appears under both names); a reference bomb shares them exponentially.
 */
const MAX_SHARED_VISITS = 100_000;

function isTensorValue(value: PickleValue): value is TensorValue {
  return (
    value instanceof TorchTensor ||
    value instanceof TorchSkippedTensor ||
    value instanceof NumpyArray ||
    (value instanceof PickleObject && value.className.startsWith('torch._utils._rebuild_'))
  );
}

function isOptimizerState(value: PickleValue): boolean {
  return value instanceof Map && value.has('state') && value.has('param_groups');
}

/**
 * Finds the state dict: the root itself when its tensors sit at the top, or the one container of
 * tensors beside scalars (Lightning's state_dict next to epoch and hyper_parameters), whose keys
 * are then used unprefixed. Other containers of tensors get dotted names; optimizer and training
 * state is counted, not listed; the root's other entries become metadata.
 */
function findTensors(root: PickleValue, file: string): FoundTensors {
  const walker = new TensorWalker(file);
  const metadata: Record<string, unknown> = {};
  const warnings: string[] = [];
  const named: NamedValue[] = [];
  const entries = topLevelEntries(root);
  if (!entries) {
    if (root instanceof PickleObject) metadata.class = root.className;
    walker.collect(root, '', named);
  } else {
    const containers: Array<[string, PickleValue]> = [];
    for (const [key, value] of entries) {
      if (isTensorValue(value)) named.push({ name: key, value });
      else if (walker.containsTensors(value) && (TRAINING_STATE_KEYS.has(key) || isOptimizerState(value))) walker.skipTrainingState(key, value);
      else if (walker.containsTensors(value)) containers.push([key, value]);
      else metadata[key] = toMetadata(value);
    }
    const primary = containers.length === 1 ? containers[0] : STATE_DICT_KEYS.map((key) => containers.find(([name]) => name === key)).find(Boolean);
    for (const container of containers) walker.collect(container[1], container === primary ? '' : container[0], named);
  }
  if (walker.skippedTensors > 0) {
    warnings.push(
      `${walker.skippedTensors} optimizer and training-state tensors (under ${[...walker.skippedKeys].join(', ')}) are not model weights and are not listed`,
    );
  }
  return { tensors: uniqueNames(named, warnings), metadata, warnings };
}

function topLevelEntries(root: PickleValue): Array<[string, PickleValue]> | undefined {
  const dict = root instanceof Map ? root : root instanceof PickleObject && !isModule(root) && root.dictItems.size > 0 ? root.dictItems : undefined;
  if (!dict) return undefined;
  const entries: Array<[string, PickleValue]> = [];
  for (const [key, value] of dict) {
    const segment = keySegment(key);
    if (segment !== undefined) entries.push([segment, value]);
  }
  return entries;
}

function uniqueNames(named: readonly NamedValue[], warnings: string[]): NamedValue[] {
  const seen = new Set<string>();
  return named.filter(({ name }) => {
    if (!seen.has(name)) return seen.add(name);
    warnings.push(`two tensors are named "${name}"; only the first is listed`);
    return false;
  });
}

function keySegment(key: PickleValue): string | undefined {
  if (typeof key === 'string') return key;
  if (typeof key === 'number' || typeof key === 'bigint' || typeof key === 'boolean') return String(key);
  return undefined;
}

function isModule(value: PickleObject): boolean {
  const attributes = value.attributes();
  return attributes.get('_parameters') instanceof Map || attributes.get('_modules') instanceof Map;
}

/** Walks the object graph with bounded depth and visits, memoizing which parts hold tensors. */
class TensorWalker {
  skippedTensors = 0;
  readonly skippedKeys = new Set<string>();
  private visits = 0;
  private sharedVisits = 0;
  // Plain maps and sets: they live as long as one open, and weak ones cost the collector dearly.
  private readonly holdsTensors = new Map<object, boolean>();
  private readonly collected = new Set<object>();
  private readonly counted = new Set<object>();

  constructor(private readonly file: string) {}

  private visit(depth: number): void {
    if (depth > MAX_WALK_DEPTH) throw new CheckpointError(this.file, `objects nested deeper than ${MAX_WALK_DEPTH} levels`);
    if (++this.visits > MAX_WALK_VISITS) {
      throw new CheckpointError(this.file, `the object graph needs more than ${MAX_WALK_VISITS} visits (a reference bomb?); refusing it`);
    }
  }

  containsTensors(value: PickleValue, depth = 0): boolean {
    if (isTensorValue(value)) return true;
    if (value === null || typeof value !== 'object' || value instanceof Uint8Array) return false;
    const known = this.holdsTensors.get(value);
    if (known !== undefined) return known;
    this.visit(depth);
    this.holdsTensors.set(value, false); // a cycle back here (rare in checkpoints) counts as holding none
    const holds = children(value).some(([, child]) => this.containsTensors(child, depth + 1));
    this.holdsTensors.set(value, holds);
    return holds;
  }

  collect(value: PickleValue, name: string, out: NamedValue[], depth = 0, path = new Set<object>()): void {
    if (isTensorValue(value)) {
      out.push({ name: name || 'tensor', value });
      return;
    }
    if (value === null || typeof value !== 'object' || value instanceof Uint8Array || path.has(value)) return;
    if (!this.containsTensors(value)) return;
    this.visit(depth);
    if (this.collected.has(value) && ++this.sharedVisits > MAX_SHARED_VISITS) {
      throw new CheckpointError(this.file, `the object graph reaches the same containers more than ${MAX_SHARED_VISITS} times (a reference bomb?); refusing it`);
    }
    this.collected.add(value);
    if (depth > 0 && isOptimizerState(value)) return this.skipTrainingState(name, value);
    path.add(value);
    for (const [segment, child] of children(value)) this.collect(child, join(name, segment), out, depth + 1, path);
    path.delete(value);
  }

  skipTrainingState(key: string, value: PickleValue): void {
    this.skippedKeys.add(key);
    this.countInto(value, 0);
  }

  private countInto(value: PickleValue, depth: number): void {
    if (value === null || typeof value !== 'object' || value instanceof Uint8Array || this.counted.has(value)) return;
    this.counted.add(value);
    if (isTensorValue(value)) {
      this.skippedTensors++;
      return;
    }
    this.visit(depth);
    for (const [, child] of children(value)) this.countInto(child, depth + 1);
  }
}

function join(prefix: string, segment: string): string {
  return prefix ? `${prefix}.${segment}` : segment;
}

/** Named children of a container; nn.Module objects expose what their state_dict() would. */
function children(value: PickleValue): Array<[string, PickleValue]> {
  if (Array.isArray(value)) return value.map((item, index) => [String(index), item]);
  if (value instanceof Map) {
    const entries: Array<[string, PickleValue]> = [];
    for (const [key, item] of value) {
      const segment = keySegment(key);
      if (segment !== undefined) entries.push([segment, item]);
    }
    return entries;
  }
  if (value instanceof PickleObject) return isModule(value) ? moduleChildren(value) : objectChildren(value);
  return [];
}

function moduleChildren(module: PickleObject): Array<[string, PickleValue]> {
  const attributes = module.attributes();
  const nonPersistent = attributes.get('_non_persistent_buffers_set');
  const skipped = nonPersistent instanceof Set ? nonPersistent : new Set<PickleValue>();
  const entries: Array<[string, PickleValue]> = [];
  for (const group of ['_parameters', '_buffers', '_modules']) {
    const members = attributes.get(group);
    if (!(members instanceof Map)) continue;
    for (const [key, item] of members) {
      const segment = keySegment(key);
      if (segment !== undefined && item !== null && !skipped.has(key)) entries.push([segment, item]);
    }
  }
  return entries;
}

function objectChildren(object: PickleObject): Array<[string, PickleValue]> {
  return [
    ...children(object.attributes()),
    ...children(object.dictItems),
    ...children(object.listItems),
    ...object.args.map((item, index): [string, PickleValue] => [`arg${index}`, item]),
  ];
}

// ---------------------------------------------------------------------------------------------
// Metadata: JSON-safe, small

const METADATA_MAX_DEPTH = 4;
const METADATA_MAX_ITEMS = 64;
const METADATA_MAX_STRING = 1000;
/** Values copied per top-level entry; shared references could otherwise multiply them. */
const METADATA_MAX_VALUES = 5000;

/** A JSON-safe copy of a non-tensor value, cut short where it gets large or deep. */
function toMetadata(value: PickleValue, depth = 0, budget = { left: METADATA_MAX_VALUES }): unknown {
  if (--budget.left < 0) return '…';
  if (value === null || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value : String(value);
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'string') return value.length > METADATA_MAX_STRING ? `${value.slice(0, METADATA_MAX_STRING)}…` : value;
  if (value instanceof Uint8Array) return { __bytes__: value.length };
  if (value instanceof TorchTensor || value instanceof TorchSkippedTensor || value instanceof NumpyArray) return { __tensor__: true };
  if (value instanceof NumpyDType) return value.code;
  if (value instanceof PickleGlobal) return { __global__: value.qualifiedName };
  if (value instanceof TorchStorage || value instanceof TorchEmbeddedStorage) return { __storage__: true };
  if (depth >= METADATA_MAX_DEPTH) return '…';
  if (Array.isArray(value) || value instanceof Set) {
    const items = [...value];
    if (items.length > METADATA_MAX_ITEMS) return { __length__: items.length };
    return items.map((item) => toMetadata(item, depth + 1, budget));
  }
  if (value instanceof Map) return metadataObject(value, depth, budget);
  const described: Record<string, unknown> = {
    __class__: value.className,
    ...metadataObject(value.attributes(), depth, budget),
    ...metadataObject(value.dictItems, depth, budget),
  };
  if (value.listItems.length > 0) described.__items__ = toMetadata(value.listItems, depth + 1, budget);
  return described;
}

function metadataObject(dict: ReadonlyMap<PickleValue, PickleValue>, depth: number, budget: { left: number }): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  let count = 0;
  for (const [key, item] of dict) {
    const segment = keySegment(key);
    if (segment === undefined) continue;
    if (++count > METADATA_MAX_ITEMS) {
      out['…'] = `${dict.size - METADATA_MAX_ITEMS} more`;
      break;
    }
    out[segment] = toMetadata(item, depth + 1, budget);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Tensors

function toTensor(named: NamedValue, loaded: LoadedPickle, file: string, warnings: string[]): Tensor | undefined {
  const { name, value } = named;
  const skip = (reason: string): undefined => {
    warnings.push(`tensor "${name}" is skipped: ${reason}`);
    return undefined;
  };
  if (value instanceof TorchSkippedTensor) return skip(value.reason);
  if (value instanceof PickleObject) return skip(`${value.className} tensors are not supported`);
  if (value instanceof NumpyArray) return numpyTensor(name, value, file) ?? skip(`numpy arrays of dtype "${value.dtype?.code ?? '?'}" are not numeric`);
  const storage = value.storage;
  if (storage instanceof TorchEmbeddedStorage) return skip('its storage is embedded in the pickle as a nested torch.save, which is not read');
  if (!(storage instanceof TorchStorage)) return skip('it has no storage in this file');
  const dtype: DType = value.dtype ?? storage.dtype;
  return new StoredTensor(name, dtype, value.shape, loaded.storageBytes(storage), loaded.littleEndian, value.storageOffset, value.strides);
}

function numpyTensor(name: string, array: NumpyArray, file: string): Tensor | undefined {
  const numpyType = array.dtype;
  const dtype = numpyType?.dtype;
  if (!numpyType || !dtype || !(array.data instanceof Uint8Array)) return undefined;
  const bytes = Buffer.from(array.data.buffer, array.data.byteOffset, array.data.byteLength);
  const strides = array.fortranOrder ? [...rowMajorStrides([...array.shape].reverse())].reverse() : rowMajorStrides(array.shape);
  return new StoredTensor(name, dtype, array.shape, new BufferSource(bytes, `${file}[${name}]`), numpyType.littleEndian, 0, strides);
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints: pytorch_model.bin.index.json

async function openShardIndex(indexPath: string): Promise<Checkpoint> {
  const fail: (problem: string) => never = (problem) => {
    throw new CheckpointError(indexPath, problem);
  };
  const index = await readIndex(indexPath);
  const weightMap = index.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) fail('the index has no "weight_map" object');
  const shardOf = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== 'string') fail(`"weight_map" maps "${name}" to something that is not a file name`);
    shardOf.set(name, checkShardName(shard as string, fail));
  }
  const directory = path.dirname(indexPath);
  const shards = new Map<string, Checkpoint>();
  try {
    for (const shard of new Set(shardOf.values())) shards.set(shard, await openShard(path.join(directory, shard), shard, indexPath));
    const warnings: string[] = [];
    const tensorsByShard = new Map<string, Map<string, Tensor>>();
    for (const [shard, checkpoint] of shards) {
      tensorsByShard.set(shard, new Map(checkpoint.tensors.map((tensor) => [tensor.name, tensor])));
      warnings.push(...checkpoint.warnings.map((warning) => `${shard}: ${warning}`));
      const unlisted = checkpoint.tensors.filter((tensor) => shardOf.get(tensor.name) !== shard).length;
      if (unlisted > 0) warnings.push(`${shard}: ${unlisted} tensors are not listed in the index and are left out`);
    }
    const tensors = [...shardOf].map(
      ([name, shard]) => tensorsByShard.get(shard)?.get(name) ?? fail(`"${name}" maps to shard "${shard}", which does not hold it`),
    );
    const first = shards.values().next().value;
    const indexMetadata = typeof index.metadata === 'object' && index.metadata !== null ? (index.metadata as Record<string, unknown>) : {};
    return {
      path: indexPath,
      format: first?.format ?? 'pytorch-zip',
      metadata: { ...indexMetadata, shards: [...shards.keys()] },
      tensors,
      warnings,
      close: () => closeAll(shards.values()),
    };
  } catch (error) {
    await closeAll(shards.values());
    throw asCheckpointError(error, indexPath);
  }
}

async function readIndex(indexPath: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    const stat = await fs.stat(indexPath);
    if (stat.size > MAX_INDEX_BYTES) throw new CheckpointError(indexPath, `index of ${stat.size} bytes is too large`);
    text = await fs.readFile(indexPath, 'utf8');
  } catch (error) {
    if (error instanceof CheckpointError) throw error;
    throw new CheckpointError(indexPath, `cannot read: ${(error as NodeJS.ErrnoException).code ?? describeError(error)}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new CheckpointError(indexPath, `the index is not valid JSON: ${describeError(error)}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new CheckpointError(indexPath, 'the index is not a JSON object');
  return parsed as Record<string, unknown>;
}

/** Shards live beside the index; a name reaching elsewhere is refused rather than followed. */
function checkShardName(shard: string, fail: (problem: string) => never): string {
  const normalized = path.normalize(shard);
  if (path.isAbsolute(shard) || normalized === '..' || normalized.startsWith(`..${path.sep}`) || normalized === '.') fail(`shard "${shard}" lies outside the index's folder`);
  return shard;
}

async function openShard(shardPath: string, shard: string, indexPath: string): Promise<Checkpoint> {
  try {
    return await openCheckpointFile(shardPath);
  } catch (error) {
    if (error instanceof CheckpointError && error.file === shardPath && error.problem.startsWith('cannot open')) {
      throw new CheckpointError(indexPath, `shard "${shard}" is missing (${error.problem})`);
    }
    throw error;
  }
}

async function closeAll(checkpoints: Iterable<Checkpoint>): Promise<void> {
  await Promise.all([...checkpoints].map((checkpoint) => checkpoint.close()));
}
