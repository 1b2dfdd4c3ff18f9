/**
 * A pickle interpreter that never executes anything.
 *
 * Python's unpickler imports modules and calls whatever a pickle names, which is how a checkpoint
 * can run code. This one reads every opcode of protocols 0-5 but resolves globals to inert values:
 * an allow-list maps the names PyTorch, numpy and the standard library emit (OrderedDict,
 * torch._utils._rebuild_tensor_v2, numpy's _reconstruct, ...) to small builders that produce plain
 * data; any other global becomes a PickleGlobal, and calling it yields a PickleObject that only
 * records its class name, arguments and state. Calls to clearly dangerous callables (os.system,
 * subprocess.*, builtins.eval, ...) refuse the whole file, since no genuine checkpoint makes them.
 *
 * The interpreter is a loop over an explicit stack, so hostile nesting cannot overflow the JS stack,
 * and it enforces limits on opcodes, stack items, nesting, memo entries and integer sizes. Every
 * string, bytes or integer comes from a length checked against the input that remains before
 * anything is allocated, so the memory a pickle costs is bounded by its own length.
 */
import { CheckpointError } from '../errors';
import { MAX_SINGLE_READ, type ByteSource } from '../io/byteSource';
import { DTYPE_BYTES, decodeToFloat64, isDecodable, type DType } from './dtype';

/**
 * What unpickling yields. Python ints are numbers when they are safe integers and bigints
 * otherwise; tuples and lists are both arrays; dicts (OrderedDict included) are Maps; sets and
 * frozensets are Sets; str is string; bytes and bytearray are Buffers.
 */
export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PickleValue[]
  | PickleDict
  | PickleSet
  | PickleGlobal
  | PickleObject
  | TorchTensor
  | TorchSkippedTensor
  | TorchStorage
  | TorchEmbeddedStorage
  | NumpyArray
  | NumpyDType;

export interface PickleDict extends Map<PickleValue, PickleValue> {}
export interface PickleSet extends Set<PickleValue> {}

/** A reference to `module.name`, resolved to nothing executable. */
export class PickleGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

/** torch.FloatStorage and its siblings: the element type of a persistent storage. */
export class TorchStorageType extends PickleGlobal {
  constructor(module: string, name: string, readonly dtype: DType | undefined) {
    super(module, name);
  }
}

/** torch.float32 and its siblings (TypedStorage's persistent ids, _rebuild_tensor_v3). */
export class TorchDType extends PickleGlobal {
  constructor(module: string, name: string, readonly dtype: DType | undefined) {
    super(module, name);
  }
}

/** An instance of a class outside the allow-list (or a call's result): data only. */
export class PickleObject {
  /** Items appended by APPEND/APPENDS (list subclasses). */
  readonly listItems: PickleValue[] = [];
  /** Items set by SETITEM/SETITEMS (dict subclasses such as Lightning's AttributeDict). */
  readonly dictItems: PickleDict = new Map();
  /** The state given by BUILD, if any. */
  state: PickleValue | undefined;

  constructor(
    readonly className: string,
    readonly args: readonly PickleValue[],
  ) {}

  /** Instance attributes: BUILD's dict state, merged with slot state when both are given. */
  attributes(): PickleDict {
    const attributes: PickleDict = new Map();
    const parts = Array.isArray(this.state) && this.state.length === 2 ? this.state : [this.state];
    for (const part of parts) {
      if (part instanceof Map) for (const [key, value] of part) attributes.set(key, value);
    }
    return attributes;
  }

  setState(state: PickleValue): void {
    this.state = state;
  }
}

/**
 * A tensor rebuilt by torch._utils._rebuild_tensor*: a view of `storage` (whatever the persistent
 * id resolved to), with offset and strides in elements.
 */
export class TorchTensor {
  constructor(
    readonly storage: PickleValue,
    readonly storageOffset: number,
    readonly shape: readonly number[],
    readonly strides: readonly number[],
    /** Set by _rebuild_tensor_v3, whose storage is untyped bytes. */
    readonly dtype?: DType,
  ) {}
}

/** A tensor that is recognised but not readable here (quantized, sparse, meta, ...). */
export class TorchSkippedTensor {
  constructor(
    readonly reason: string,
    readonly shape?: readonly number[],
  ) {}
}

/** A storage named by a persistent id; the container format maps its key to bytes. */
export class TorchStorage {
  constructor(
    readonly key: string,
    readonly dtype: DType,
    /** Elements of the whole storage `key`. */
    readonly numel: number,
    readonly location: string,
    /** Legacy storage views: a range of the storage, in elements. */
    readonly view?: { readonly offset: number; readonly numel: number },
  ) {}
}

/** torch.storage._load_from_bytes: a storage serialized into the pickle itself; not read. */
export class TorchEmbeddedStorage {
  constructor(readonly byteLength: number) {}
}

const NUMPY_DTYPES: Readonly<Record<string, DType>> = {
  f2: 'F16', f4: 'F32', f8: 'F64', i1: 'I8', i2: 'I16', i4: 'I32', i8: 'I64',
  u1: 'U8', u2: 'U16', u4: 'U32', u8: 'U64', b1: 'BOOL', c8: 'C64', c16: 'C128',
};

/** numpy.dtype as pickled: a type code such as "f4" and, after BUILD, a byte order. */
export class NumpyDType {
  readonly code: string;
  byteOrder: string;

  constructor(code: string) {
    const explicitOrder = /^[<>|=]/.test(code);
    this.byteOrder = explicitOrder ? code[0]! : '|';
    this.code = explicitOrder ? code.slice(1) : code;
  }

  /** The element type, or undefined for strings, objects, records and dates. */
  get dtype(): DType | undefined {
    return NUMPY_DTYPES[this.code];
  }

  get littleEndian(): boolean {
    return this.byteOrder !== '>';
  }

  setState(state: PickleValue): void {
    if (Array.isArray(state) && typeof state[1] === 'string') this.byteOrder = state[1];
  }
}

/** A numpy array rebuilt from its pickled state; numeric data stays a view of the pickle's bytes. */
export class NumpyArray {
  shape: readonly number[] = [];
  dtype: NumpyDType | undefined;
  fortranOrder = false;
  /** Raw element bytes, or the items of an object array. */
  data: Uint8Array | readonly PickleValue[] = Buffer.alloc(0);

  setState(state: PickleValue, context: BuildContext): void {
    if (!Array.isArray(state) || (state.length !== 4 && state.length !== 5)) {
      context.fail('numpy array state is not (version, shape, dtype, fortran, data)');
    }
    const [shape, dtype, fortran, data] = state.length === 5 ? state.slice(1) : state;
    if (!(dtype instanceof NumpyDType)) context.fail('numpy array state has no dtype');
    this.shape = intList(shape, 'numpy array shape', context);
    this.dtype = dtype;
    this.fortranOrder = fortran === true || fortran === 1;
    if (data instanceof Uint8Array || Array.isArray(data)) this.data = data;
    // A Python 2 str holding the bytes arrives decoded as UTF-8; encoding it again restores them.
    else if (typeof data === 'string') this.data = Buffer.from(data, 'utf8');
    else context.fail('numpy array state has no data');
  }
}

export interface PickleLimits {
  /** Opcodes processed; every opcode takes at least one byte, this bounds the time. */
  readonly maxOpcodes: number;
  /** Items on the stack, all marks together. */
  readonly maxStackItems: number;
  /** Containers within containers, and marks within marks. */
  readonly maxNesting: number;
  readonly maxMemoEntries: number;
  /** Bytes (or decimal digits / 2.4) of one integer; checkpoints hold small integers. */
  readonly maxIntegerBytes: number;
}

export const DEFAULT_PICKLE_LIMITS: PickleLimits = {
  maxOpcodes: 25_000_000,
  maxStackItems: 1_000_000,
  maxNesting: 1000,
  maxMemoEntries: 10_000_000,
  maxIntegerBytes: 1024,
};

export interface UnpickleOptions {
  /** Named in every error: the file, or file[member]. */
  readonly file: string;
  /** Byte of `data` where the pickle starts (default 0). */
  readonly start?: number;
  /**
   * Bytes that exist from data[0] on when `data` is only a window of a longer input (default
   * data.length). A pickle that runs past the window but not past this is retried by
   * unpickleSource with a larger window; one that runs past this is truncated.
   */
  readonly available?: number;
  /** Position of data[0] in the file, so that messages give file offsets (default 0). */
  readonly origin?: number;
  /** Resolves persistent ids (PyTorch's storages); without it a persistent id is an error. */
  readonly persistentLoad?: (id: PickleValue) => PickleValue;
  readonly limits?: Partial<PickleLimits>;
}

export interface UnpickleResult {
  readonly value: PickleValue;
  /** Byte after STOP, in the coordinates of the input given (data index, or source offset). */
  readonly end: number;
  /** Placeholders for unknown globals and other things that did not stop the reading. */
  readonly warnings: readonly string[];
}

/** What builders may do: nothing but build data, call other allow-listed builders, and complain. */
export interface BuildContext {
  readonly file: string;
  call(callable: PickleValue, args: PickleValue): PickleValue;
  fail(problem: string): never;
  warn(message: string): void;
}

type Builder = (args: readonly PickleValue[], context: BuildContext) => PickleValue;

/** Unpickles one pickle from a buffer holding it (and possibly more after it). */
export function unpickle(data: Buffer, options: UnpickleOptions): UnpickleResult {
  const limits = { ...DEFAULT_PICKLE_LIMITS, ...options.limits };
  const unpickler = new Unpickler(data, options, limits);
  const value = unpickler.run();
  return { value, end: unpickler.position, warnings: unpickler.warnings };
}

const INITIAL_WINDOW = 64 * 1024;
/** A pickle must fit in one read; the tensor data of PyTorch files lies outside the pickle. */
const MAX_PICKLE_BYTES = MAX_SINGLE_READ;

/**
 * Unpickles the pickle that starts at `offset` of a source whose length past the pickle is
 * unknown (legacy PyTorch files put storages right after it). Reads a small window and widens it
 * only while the pickle runs past it, so a 20 GB file costs about the pickle's own size.
 */
export async function unpickleSource(
  source: ByteSource,
  offset: number,
  options: Omit<UnpickleOptions, 'file' | 'start' | 'available' | 'origin'> = {},
): Promise<UnpickleResult> {
  const available = source.size - offset;
  if (available <= 0) throw new CheckpointError(source.name, `truncated: expected a pickle at byte ${offset}, found the end of the file`);
  let window = Math.min(available, INITIAL_WINDOW);
  for (;;) {
    const data = await source.read(offset, window);
    try {
      const result = unpickle(data, { ...options, file: source.name, available, origin: offset });
      return { ...result, end: offset + result.end };
    } catch (error) {
      if (!(error instanceof MoreInputNeeded)) throw error;
      if (window >= MAX_PICKLE_BYTES) {
        throw new CheckpointError(source.name, `the pickle at byte ${offset} is larger than ${MAX_PICKLE_BYTES} bytes; refusing to read it`);
      }
      window = Math.min(available, MAX_PICKLE_BYTES, Math.max(window * 2, error.end));
    }
  }
}

/** Thrown when the pickle runs past the window but not past the input; unpickleSource retries. */
class MoreInputNeeded extends Error {
  constructor(readonly end: number) {
    super('more input needed');
  }
}

// ---------------------------------------------------------------------------------------------
// Globals: aliases, the dangerous, the harmless, and the allow-listed builders.

/** Python 2 names and moved modules, as Python's own unpickler and torch.load map them. */
const MODULE_ALIASES: Readonly<Record<string, string>> = {
  __builtin__: 'builtins',
  copy_reg: 'copyreg',
  exceptions: 'builtins',
  'torch.tensor': 'torch._tensor',
};

function canonicalModule(module: string): string {
  if (module === 'numpy._core' || module.startsWith('numpy._core.')) return `numpy.core${module.slice('numpy._core'.length)}`;
  return MODULE_ALIASES[module] ?? module;
}

/** Modules whose every callable can reach the shell, the file system, the network or an interpreter. */
const DANGEROUS_MODULES = [
  'os', 'posix', 'nt', 'subprocess', '_posixsubprocess', 'pty', 'shutil', 'socket', 'sys', 'runpy',
  'importlib', 'imp', 'zipimport', 'ctypes', 'code', 'codeop', 'commands', 'popen2', 'multiprocessing',
  'pickle', '_pickle', 'cPickle', 'dill', 'marshal', 'shelve', 'webbrowser', 'urllib', 'urllib2',
  'requests', 'http', 'httplib', 'asyncio', 'signal', 'platform', 'pdb', 'bdb', 'timeit', 'trace',
  'cProfile', 'profile', 'doctest', '_winapi', 'msvcrt', 'winreg', 'torch.hub', 'torch.package',
  'torch.utils.cpp_extension',
];
const DANGEROUS_NAMES = new Set([
  'builtins.eval', 'builtins.exec', 'builtins.execfile', 'builtins.compile', 'builtins.__import__',
  'builtins.open', 'builtins.file', 'builtins.input', 'builtins.raw_input', 'builtins.getattr',
  'builtins.setattr', 'builtins.delattr', 'builtins.globals', 'builtins.locals', 'builtins.vars',
  'builtins.breakpoint', 'builtins.reload', 'builtins.apply', 'builtins.exit', 'builtins.quit',
  'io.open', '_io.open', 'io.open_code', '_io.open_code', 'io.FileIO', '_io.FileIO',
  'operator.attrgetter', 'operator.methodcaller', 'numpy.load', 'numpy.fromfile',
  'numpy.testing._private.utils.runstring', 'torch.load', 'torch.jit.load', 'torch.serialization.load',
  'torch.serialization._load', 'torch.serialization._legacy_load',
]);

/** True for callables no checkpoint calls and an attacker would: calling one refuses the file. */
export function isDangerousGlobal(qualifiedName: string): boolean {
  return DANGEROUS_NAMES.has(qualifiedName) || DANGEROUS_MODULES.some((module) => qualifiedName.startsWith(`${module}.`));
}

function refusal(qualifiedName: string): string {
  return `pickle calls ${qualifiedName}, which is never executed; refusing this file`;
}

/** Namespaces whose classes commonly appear in checkpoints; kept as placeholders without a warning. */
const FAMILIAR_PREFIXES = [
  'torch.', 'numpy.', 'collections.', 'builtins.', 'copyreg.', 'argparse.Namespace', 'types.SimpleNamespace',
  'pathlib.', 'datetime.', 'decimal.Decimal', 'fractions.Fraction', 'uuid.UUID', 'enum.', 'functools.partial',
  'pytorch_lightning.', 'lightning.', 'lightning_fabric.', 'omegaconf.', 'typing.',
];

const TORCH_STORAGE_DTYPES: Readonly<Record<string, DType>> = {
  DoubleStorage: 'F64', FloatStorage: 'F32', HalfStorage: 'F16', BFloat16Storage: 'BF16',
  LongStorage: 'I64', IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8', ByteStorage: 'U8',
  BoolStorage: 'BOOL', ComplexFloatStorage: 'C64', ComplexDoubleStorage: 'C128',
  QInt8Storage: 'QINT8', QUInt8Storage: 'QUINT8', QInt32Storage: 'QINT32', UntypedStorage: 'U8',
};

const TORCH_DTYPES: Readonly<Record<string, DType>> = {
  float64: 'F64', double: 'F64', float32: 'F32', float: 'F32', float16: 'F16', half: 'F16', bfloat16: 'BF16',
  float8_e4m3fn: 'F8_E4M3', float8_e5m2: 'F8_E5M2',
  int64: 'I64', long: 'I64', int32: 'I32', int: 'I32', int16: 'I16', short: 'I16', int8: 'I8',
  uint8: 'U8', uint16: 'U16', uint32: 'U32', uint64: 'U64', bool: 'BOOL',
  complex64: 'C64', cfloat: 'C64', complex128: 'C128', cdouble: 'C128',
  qint8: 'QINT8', quint8: 'QUINT8', qint32: 'QINT32',
};

function argument(args: readonly PickleValue[], index: number, what: string, context: BuildContext): PickleValue {
  if (index >= args.length) context.fail(`${what}: missing argument ${index + 1}`);
  return args[index]!;
}

function intValue(value: PickleValue | undefined, what: string, context: BuildContext): number {
  if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
  if (typeof value === 'boolean') return value ? 1 : 0;
  context.fail(`${what} is not an integer`);
}

function intList(value: PickleValue | undefined, what: string, context: BuildContext): number[] {
  if (!Array.isArray(value)) context.fail(`${what} is not a tuple of integers`);
  const list = new Array<number>(value.length);
  for (let i = 0; i < value.length; i++) {
    const item = value[i];
    list[i] = typeof item === 'number' && Number.isSafeInteger(item) ? item : intValue(item, `${what}[${i}]`, context);
  }
  return list;
}

function rebuildTensor(args: readonly PickleValue[], context: BuildContext, dtypeIndex?: number): TorchTensor {
  const what = 'torch tensor';
  const storage = argument(args, 0, what, context);
  const offset = intValue(argument(args, 1, what, context), 'tensor storage offset', context);
  const shape = intList(argument(args, 2, what, context), 'tensor size', context);
  const strides = intList(argument(args, 3, what, context), 'tensor stride', context);
  if (shape.length !== strides.length) context.fail(`tensor size [${shape}] and stride [${strides}] differ in length`);
  let dtype: DType | undefined;
  if (dtypeIndex !== undefined) {
    const dtypeValue = argument(args, dtypeIndex, what, context);
    if (!(dtypeValue instanceof TorchDType) || !dtypeValue.dtype) context.fail('tensor dtype is not a known torch dtype');
    dtype = dtypeValue.dtype;
  }
  return new TorchTensor(storage, offset, shape, strides, dtype);
}

function shapeOrUndefined(value: PickleValue | undefined): number[] | undefined {
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'number' && Number.isSafeInteger(item))) return undefined;
  return value as number[];
}

function skippedTensor(reason: string, shapeIndex?: number): Builder {
  return (args) => new TorchSkippedTensor(reason, shapeIndex === undefined ? undefined : shapeOrUndefined(args[shapeIndex]));
}

/** torch._tensor._rebuild_from_type(_v2)(func, type, args, state): the tensor is func(*args). */
function rebuildFromType(args: readonly PickleValue[], context: BuildContext): PickleValue {
  return context.call(argument(args, 0, 'tensor subclass', context), argument(args, 2, 'tensor subclass', context));
}

function encodeText(args: readonly PickleValue[], context: BuildContext): Buffer {
  const text = args[0];
  if (typeof text !== 'string') context.fail('_codecs.encode of a value that is not a string');
  const encoding = typeof args[1] === 'string' ? args[1].toLowerCase().replace(/[-_]/g, '') : 'utf8';
  if (encoding === 'latin1' || encoding === 'iso88591') return Buffer.from(text, 'latin1');
  if (encoding === 'utf8' || encoding === 'ascii') return Buffer.from(text, encoding);
  context.fail(`_codecs.encode with unsupported encoding ${String(args[1])}`);
}

function bytesOf(args: readonly PickleValue[], context: BuildContext): Buffer {
  const source = args[0];
  if (source === undefined) return Buffer.alloc(0);
  if (typeof source === 'string') return encodeText(args, context);
  if (source instanceof Uint8Array) return Buffer.from(source);
  if (Array.isArray(source) && source.every((item) => typeof item === 'number' && item >= 0 && item < 256)) {
    return Buffer.from(source as number[]);
  }
  context.fail('bytes or bytearray built from an unsupported value');
}

function itemsOf(value: PickleValue | undefined): readonly PickleValue[] {
  if (Array.isArray(value)) return value;
  if (value instanceof Set) return [...value];
  if (value instanceof Map) return [...value.keys()];
  return [];
}

function dictOf(args: readonly PickleValue[], context: BuildContext): PickleDict {
  const dict: PickleDict = new Map();
  const source = args[0];
  if (source instanceof Map) {
    for (const [key, value] of source) dict.set(key, value);
  } else if (Array.isArray(source)) {
    for (const pair of source) {
      if (!Array.isArray(pair) || pair.length !== 2) context.fail('dict built from items that are not pairs');
      dict.set(pair[0]!, pair[1]!);
    }
  }
  return dict;
}

/** numpy.core.multiarray.scalar(dtype, bytes): a numpy scalar, read as a plain number. */
function numpyScalar(args: readonly PickleValue[], context: BuildContext): PickleValue {
  const [dtype, data] = args;
  if (!(dtype instanceof NumpyDType)) context.fail('numpy scalar without a dtype');
  if (dtype.code === 'O8' && data !== undefined) return data;
  const type = dtype.dtype;
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  if (!type || !isDecodable(type) || !(bytes instanceof Uint8Array) || bytes.length !== DTYPE_BYTES[type]) {
    return new PickleObject('numpy.core.multiarray.scalar', args);
  }
  const buffer = Buffer.from(bytes);
  if (type === 'I64' || type === 'U64') {
    const big = dtype.littleEndian
      ? (type === 'I64' ? buffer.readBigInt64LE() : buffer.readBigUInt64LE())
      : (type === 'I64' ? buffer.readBigInt64BE() : buffer.readBigUInt64BE());
    return normalizeInt(big);
  }
  const value = decodeToFloat64(type, buffer, dtype.littleEndian)[0]!;
  return type === 'BOOL' ? value !== 0 : value;
}

/** numpy.core.numeric._frombuffer(buffer, dtype, shape, order): protocol 5's in-band arrays. */
function numpyFromBuffer(args: readonly PickleValue[], context: BuildContext): NumpyArray {
  const [data, dtype, shape, order] = args;
  if (!(data instanceof Uint8Array) || !(dtype instanceof NumpyDType)) context.fail('numpy _frombuffer without bytes and dtype');
  const array = new NumpyArray();
  array.data = data;
  array.dtype = dtype;
  array.shape = intList(shape, 'numpy array shape', context);
  array.fortranOrder = order === 'F';
  return array;
}

/** copyreg._reconstructor(cls, base, state): protocol 0/1 instances of new-style classes. */
function reconstructor(args: readonly PickleValue[], context: BuildContext): PickleValue {
  const [cls, base, state] = args;
  // Python would call base.__init__(instance, state): a dangerous base is refused like any call.
  if (base instanceof PickleGlobal && isDangerousGlobal(base.qualifiedName)) context.fail(refusal(base.qualifiedName));
  const instance = context.call(cls ?? null, []);
  if (instance instanceof PickleObject && state instanceof Map) {
    for (const [key, value] of state) instance.dictItems.set(key, value);
  } else if (instance instanceof PickleObject && Array.isArray(state)) {
    instance.listItems.push(...state);
  }
  return instance;
}

const BUILDERS: ReadonlyMap<string, Builder> = new Map<string, Builder>([
  ['collections.OrderedDict', dictOf],
  ['builtins.dict', dictOf],
  ['collections.defaultdict', () => new Map()],
  ['builtins.set', (args) => new Set(itemsOf(args[0]))],
  ['builtins.frozenset', (args) => new Set(itemsOf(args[0]))],
  ['builtins.list', (args) => [...itemsOf(args[0])]],
  ['builtins.tuple', (args) => [...itemsOf(args[0])]],
  ['builtins.bytes', bytesOf],
  ['builtins.bytearray', bytesOf],
  ['_codecs.encode', encodeText],
  ['copyreg._reconstructor', reconstructor],
  ['copyreg.__newobj__', (args, context) => context.call(args[0] ?? null, args.slice(1))],
  ['copyreg.__newobj_ex__', (args, context) => context.call(args[0] ?? null, args[1] ?? [])],
  ['torch._utils._rebuild_tensor', (args, context) => rebuildTensor(args, context)],
  ['torch._utils._rebuild_tensor_v2', (args, context) => rebuildTensor(args, context)],
  ['torch._utils._rebuild_tensor_v3', (args, context) => rebuildTensor(args, context, 6)],
  ['torch._utils._rebuild_parameter', (args, context) => argument(args, 0, 'torch parameter', context)],
  ['torch._utils._rebuild_parameter_with_state', (args, context) => argument(args, 0, 'torch parameter', context)],
  ['torch._utils._rebuild_qtensor', skippedTensor('quantized tensors are not read', 2)],
  ['torch._utils._rebuild_sparse_tensor', skippedTensor('sparse tensors are not read')],
  ['torch._utils._rebuild_sparse_csr_tensor', skippedTensor('sparse tensors are not read')],
  ['torch._utils._rebuild_meta_tensor_no_storage', skippedTensor('meta tensors hold no data', 1)],
  ['torch._utils._rebuild_device_tensor_from_numpy', (args, context) => argument(args, 0, 'tensor from numpy', context)],
  ['torch._tensor._rebuild_from_type', rebuildFromType],
  ['torch._tensor._rebuild_from_type_v2', rebuildFromType],
  ['torch.Size', (args) => [...itemsOf(args[0])]],
  ['torch.storage._load_from_bytes', (args) => new TorchEmbeddedStorage(args[0] instanceof Uint8Array ? args[0].length : 0)],
  ['numpy.core.multiarray._reconstruct', () => new NumpyArray()],
  ['numpy.core.numeric._frombuffer', numpyFromBuffer],
  ['numpy.dtype', (args, context: BuildContext) => {
    const code = args[0];
    if (typeof code !== 'string') context.fail('numpy dtype without a type code');
    return new NumpyDType(code);
  }],
  ['numpy.core.multiarray.scalar', numpyScalar],
]);

// ---------------------------------------------------------------------------------------------
// The interpreter.

const OP = {
  MARK: 0x28, STOP: 0x2e, POP: 0x30, POP_MARK: 0x31, DUP: 0x32, FLOAT: 0x46, INT: 0x49, BININT: 0x4a,
  BININT1: 0x4b, LONG: 0x4c, BININT2: 0x4d, NONE: 0x4e, PERSID: 0x50, BINPERSID: 0x51, REDUCE: 0x52,
  STRING: 0x53, BINSTRING: 0x54, SHORT_BINSTRING: 0x55, UNICODE: 0x56, BINUNICODE: 0x58, APPEND: 0x61,
  BUILD: 0x62, GLOBAL: 0x63, DICT: 0x64, EMPTY_DICT: 0x7d, APPENDS: 0x65, GET: 0x67, BINGET: 0x68,
  INST: 0x69, LONG_BINGET: 0x6a, LIST: 0x6c, EMPTY_LIST: 0x5d, OBJ: 0x6f, PUT: 0x70, BINPUT: 0x71,
  LONG_BINPUT: 0x72, SETITEM: 0x73, TUPLE: 0x74, EMPTY_TUPLE: 0x29, SETITEMS: 0x75, BINFLOAT: 0x47,
  // protocol 2
  PROTO: 0x80, NEWOBJ: 0x81, EXT1: 0x82, EXT2: 0x83, EXT4: 0x84, TUPLE1: 0x85, TUPLE2: 0x86,
  TUPLE3: 0x87, NEWTRUE: 0x88, NEWFALSE: 0x89, LONG1: 0x8a, LONG4: 0x8b,
  // protocol 3
  BINBYTES: 0x42, SHORT_BINBYTES: 0x43,
  // protocol 4
  SHORT_BINUNICODE: 0x8c, BINUNICODE8: 0x8d, BINBYTES8: 0x8e, EMPTY_SET: 0x8f, ADDITEMS: 0x90,
  FROZENSET: 0x91, NEWOBJ_EX: 0x92, STACK_GLOBAL: 0x93, MEMOIZE: 0x94, FRAME: 0x95,
  // protocol 5
  BYTEARRAY8: 0x96, NEXT_BUFFER: 0x97, READONLY_BUFFER: 0x98,
} as const;

const HIGHEST_PROTOCOL = 5;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

class Unpickler implements BuildContext {
  readonly file: string;
  position: number;
  readonly warnings: string[] = [];
  private readonly available: number;
  private readonly origin: number;
  private readonly persistentLoad: ((id: PickleValue) => PickleValue) | undefined;
  private readonly stack: PickleValue[] = [];
  /** Stack heights at each MARK: one flat stack, so its length bounds every item held. */
  private readonly marks: number[] = [];
  /** The memo: pickles number their entries 0, 1, 2, ...; an array holds those, a map any others. */
  private readonly memo: PickleValue[] = [];
  private readonly sparseMemo = new Map<number, PickleValue>();
  /**
   * Nesting depth of containers deeper than 1, to refuse deeply nested data before a consumer
   * recurses. A Map rather than a WeakMap: everything lives only as long as the pickle, and
   * WeakMaps cost the garbage collector dearly.
   */
  private readonly depths = new Map<object, number>();
  private readonly dangerous = new Map<string, boolean>();
  private readonly warned = new Set<string>();

  constructor(
    private readonly data: Buffer,
    options: UnpickleOptions,
    private readonly limits: PickleLimits,
  ) {
    this.file = options.file;
    this.position = options.start ?? 0;
    this.available = Math.max(options.available ?? data.length, data.length);
    this.origin = options.origin ?? 0;
    this.persistentLoad = options.persistentLoad;
  }

  fail(problem: string): never {
    throw new CheckpointError(this.file, problem);
  }

  warn(message: string): void {
    if (this.warned.has(message)) return;
    this.warned.add(message);
    this.warnings.push(message);
  }

  run(): PickleValue {
    for (let count = 1; ; count++) {
      if (count > this.limits.maxOpcodes) {
        this.fail(`the pickle runs more than ${this.limits.maxOpcodes} opcodes; refusing it`);
      }
      const opcodeAt = this.position;
      const opcode = this.uint8('opcode');
      if (opcode === OP.STOP) return this.pop();
      this.execute(opcode, opcodeAt);
    }
  }

  private execute(opcode: number, opcodeAt: number): void {
    switch (opcode) {
      case OP.PROTO: {
        const protocol = this.uint8('protocol');
        if (protocol > HIGHEST_PROTOCOL) this.fail(`unsupported pickle protocol ${protocol}`);
        return;
      }
      case OP.FRAME:
        // Frames only help buffered readers; the length must still lie within the input.
        this.length64('frame');
        return;
      case OP.MARK:
        if (this.marks.length >= this.limits.maxNesting) this.fail(`the pickle nests marks deeper than ${this.limits.maxNesting} levels; refusing it`);
        this.marks.push(this.stack.length);
        return;
      case OP.POP:
        if (this.stack.length > this.topMark()) this.stack.pop();
        else if (this.marks.length > 0) this.marks.pop();
        else this.fail(`pickle stack underflow at byte ${this.origin + opcodeAt}`);
        return;
      case OP.POP_MARK:
        this.popMark();
        return;
      case OP.DUP:
        return this.push(this.top());
      case OP.NONE:
        return this.push(null);
      case OP.NEWTRUE:
        return this.push(true);
      case OP.NEWFALSE:
        return this.push(false);
      case OP.INT:
        return this.push(this.textInt(this.line('INT').toString('latin1'), true));
      case OP.LONG:
        return this.push(this.textInt(this.line('LONG').toString('latin1').replace(/L$/, ''), false));
      case OP.BININT:
        return this.push(this.data.readInt32LE(this.take(4, 'BININT')));
      case OP.BININT1:
        return this.push(this.uint8('BININT1'));
      case OP.BININT2:
        return this.push(this.data.readUInt16LE(this.take(2, 'BININT2')));
      case OP.LONG1:
        return this.push(this.binaryLong(this.uint8('LONG1 length')));
      case OP.LONG4:
        return this.push(this.binaryLong(this.data.readInt32LE(this.take(4, 'LONG4 length'))));
      case OP.FLOAT:
        return this.push(this.textFloat(this.line('FLOAT').toString('latin1')));
      case OP.BINFLOAT:
        return this.push(this.data.readDoubleBE(this.take(8, 'BINFLOAT')));
      case OP.STRING:
        return this.push(python2Str(unescapeQuoted(this.line('STRING'), this)));
      case OP.BINSTRING:
        return this.push(python2Str(this.bytes(this.int32Length('BINSTRING'), 'BINSTRING')));
      case OP.SHORT_BINSTRING:
        return this.push(python2Str(this.bytes(this.uint8('SHORT_BINSTRING length'), 'SHORT_BINSTRING')));
      case OP.UNICODE:
        return this.push(decodeRawUnicodeEscape(this.line('UNICODE'), this));
      case OP.SHORT_BINUNICODE:
        return this.push(this.utf8(this.uint8('SHORT_BINUNICODE length'), 'SHORT_BINUNICODE'));
      case OP.BINUNICODE:
        return this.push(this.utf8(this.data.readUInt32LE(this.take(4, 'BINUNICODE length')), 'BINUNICODE'));
      case OP.BINUNICODE8:
        return this.push(this.utf8(this.length64('BINUNICODE8'), 'BINUNICODE8'));
      case OP.SHORT_BINBYTES:
        return this.push(this.bytes(this.uint8('SHORT_BINBYTES length'), 'SHORT_BINBYTES'));
      case OP.BINBYTES:
        return this.push(this.bytes(this.data.readUInt32LE(this.take(4, 'BINBYTES length')), 'BINBYTES'));
      case OP.BINBYTES8:
        return this.push(this.bytes(this.length64('BINBYTES8'), 'BINBYTES8'));
      case OP.BYTEARRAY8:
        return this.push(Buffer.from(this.bytes(this.length64('BYTEARRAY8'), 'BYTEARRAY8')));
      case OP.NEXT_BUFFER:
        return this.fail('the pickle expects out-of-band buffers, which checkpoints never carry');
      case OP.READONLY_BUFFER:
        this.top();
        return;
      case OP.EMPTY_TUPLE:
        return this.push([]);
      case OP.TUPLE1:
      case OP.TUPLE2:
      case OP.TUPLE3: {
        const count = opcode - OP.TUPLE1 + 1;
        const items: PickleValue[] = new Array<PickleValue>(count);
        for (let i = count - 1; i >= 0; i--) items[i] = this.pop();
        return this.push(this.contain(items, items));
      }
      case OP.TUPLE:
      case OP.LIST: {
        const items = this.popMark();
        return this.push(this.contain(items, items));
      }
      case OP.EMPTY_LIST:
        return this.push([]);
      case OP.EMPTY_DICT:
        return this.push(new Map());
      case OP.DICT: {
        const dict: PickleDict = new Map();
        this.setItems(dict, this.popMark());
        return this.push(dict);
      }
      case OP.EMPTY_SET:
        return this.push(new Set());
      case OP.FROZENSET: {
        const items = this.popMark();
        return this.push(this.contain(new Set(items), items));
      }
      case OP.APPEND: {
        const item = this.pop();
        return this.append(this.top(), [item]);
      }
      case OP.APPENDS: {
        const items = this.popMark();
        return this.append(this.top(), items);
      }
      case OP.SETITEM: {
        const value = this.pop();
        const key = this.pop();
        return this.setItems(this.top(), [key, value]);
      }
      case OP.SETITEMS: {
        const items = this.popMark();
        return this.setItems(this.top(), items);
      }
      case OP.ADDITEMS: {
        const items = this.popMark();
        const target = this.top();
        if (!(target instanceof Set)) this.fail(`ADDITEMS to a value that is not a set at byte ${this.origin + opcodeAt}`);
        for (const item of items) target.add(item);
        this.contain(target, items);
        return;
      }
      case OP.GET:
        return this.push(this.recall(this.textIndex(this.line('GET'))));
      case OP.BINGET:
        return this.push(this.recall(this.uint8('BINGET')));
      case OP.LONG_BINGET:
        return this.push(this.recall(this.data.readUInt32LE(this.take(4, 'LONG_BINGET'))));
      case OP.PUT:
        return this.memoize(this.textIndex(this.line('PUT')));
      case OP.BINPUT:
        return this.memoize(this.uint8('BINPUT'));
      case OP.LONG_BINPUT:
        return this.memoize(this.data.readUInt32LE(this.take(4, 'LONG_BINPUT')));
      case OP.MEMOIZE:
        return this.memoize(this.memo.length + this.sparseMemo.size);
      case OP.GLOBAL: {
        const module = this.line('GLOBAL module').toString('utf8');
        const name = this.line('GLOBAL name').toString('utf8');
        return this.push(this.resolveGlobal(module, name));
      }
      case OP.STACK_GLOBAL: {
        const name = this.pop();
        const module = this.pop();
        if (typeof module !== 'string' || typeof name !== 'string') this.fail('STACK_GLOBAL with a module or name that is not a string');
        return this.push(this.resolveGlobal(module, name));
      }
      case OP.REDUCE: {
        const args = this.pop();
        const callable = this.pop();
        return this.push(this.call(callable, args));
      }
      case OP.NEWOBJ: {
        const args = this.pop();
        const cls = this.pop();
        return this.push(this.call(cls, args));
      }
      case OP.NEWOBJ_EX: {
        this.pop(); // keyword arguments: classes built here take none that matter
        const args = this.pop();
        const cls = this.pop();
        return this.push(this.call(cls, args));
      }
      case OP.INST: {
        const module = this.line('INST module').toString('utf8');
        const name = this.line('INST name').toString('utf8');
        const args = this.popMark();
        return this.push(this.call(this.resolveGlobal(module, name), args));
      }
      case OP.OBJ: {
        const [cls, ...args] = this.popMark();
        if (cls === undefined) this.fail(`OBJ without a class at byte ${this.origin + opcodeAt}`);
        return this.push(this.call(cls, args));
      }
      case OP.BUILD: {
        const state = this.pop();
        return this.build(this.top(), state);
      }
      case OP.PERSID:
        return this.push(this.persistent(this.line('PERSID').toString('latin1')));
      case OP.BINPERSID:
        return this.push(this.persistent(this.pop()));
      case OP.EXT1:
      case OP.EXT2:
      case OP.EXT4:
        return this.fail('the pickle uses the copyreg extension registry, which no checkpoint writer uses');
      default:
        return this.fail(`invalid pickle opcode 0x${opcode.toString(16).padStart(2, '0')} at byte ${this.origin + opcodeAt}`);
    }
  }

  // --- input ---------------------------------------------------------------------------------

  /** Advances past `length` bytes and returns where they start. */
  private take(length: number, what: string): number {
    const start = this.position;
    const end = start + length;
    if (end > this.data.length) this.exhausted(end, `${what} needs ${length} byte${length === 1 ? '' : 's'}`);
    this.position = end;
    return start;
  }

  private exhausted(end: number, problem: string): never {
    if (end > this.available) {
      const remaining = this.available - this.position;
      this.fail(`truncated pickle: ${problem} at byte ${this.origin + this.position}, but only ${remaining} remain`);
    }
    throw new MoreInputNeeded(end);
  }

  private uint8(what: string): number {
    return this.data[this.take(1, what)]!;
  }

  private bytes(length: number, what: string): Buffer {
    const start = this.take(length, what);
    return this.data.subarray(start, start + length);
  }

  private utf8(length: number, what: string): string {
    const start = this.take(length, what);
    return this.data.toString('utf8', start, start + length);
  }

  /** A 64-bit length, compared with the remaining input before it is ever used to allocate. */
  private length64(what: string): number {
    const declared = this.data.readBigUInt64LE(this.take(8, `${what} length`));
    const remaining = this.available - this.position;
    if (declared > BigInt(remaining)) {
      this.fail(`truncated pickle: ${what} at byte ${this.origin + this.position} declares ${declared} bytes but only ${remaining} remain`);
    }
    return Number(declared);
  }

  private int32Length(what: string): number {
    const length = this.data.readInt32LE(this.take(4, `${what} length`));
    if (length < 0) this.fail(`${what} with negative length ${length}`);
    return length;
  }

  private line(what: string): Buffer {
    const end = this.data.indexOf(0x0a, this.position);
    if (end < 0) this.exhausted(this.data.length + 1, `${what} has no end of line`);
    const text = this.data.subarray(this.position, end);
    this.position = end + 1;
    return text;
  }

  private textInt(text: string, booleans: boolean): number | bigint | boolean {
    if (booleans && text === '00') return false;
    if (booleans && text === '01') return true;
    if (!/^[+-]?\d+$/.test(text)) this.fail(`invalid integer "${text.slice(0, 40)}" in pickle`);
    if (text.length > this.limits.maxIntegerBytes * 2.4) this.fail(`integer of ${text.length} digits is too large`);
    return normalizeInt(BigInt(text));
  }

  private textFloat(text: string): number {
    const trimmed = text.trim().toLowerCase();
    const special: Record<string, number> = { inf: Infinity, '+inf': Infinity, '-inf': -Infinity, nan: NaN, '-nan': NaN };
    const value = Object.hasOwn(special, trimmed) ? special[trimmed]! : Number(trimmed);
    if (trimmed === '' || (Number.isNaN(value) && !Object.hasOwn(special, trimmed))) this.fail(`invalid float "${text.slice(0, 40)}" in pickle`);
    return value;
  }

  private textIndex(line: Buffer): number {
    const text = line.toString('latin1');
    if (!/^\d{1,15}$/.test(text)) this.fail(`invalid memo index "${text.slice(0, 40)}"`);
    return Number(text);
  }

  /** LONG1/LONG4: little-endian two's complement. */
  private binaryLong(length: number): number | bigint {
    if (length < 0) this.fail(`LONG4 with negative length ${length}`);
    if (length > this.limits.maxIntegerBytes) this.fail(`integer of ${length} bytes is too large`);
    const bytes = this.bytes(length, 'LONG');
    if (length === 0) return 0;
    if (length <= 6) return bytes.readIntLE(0, length);
    let value = 0n;
    for (let i = length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]!);
    if (bytes[length - 1]! & 0x80) value -= 1n << BigInt(8 * length);
    return normalizeInt(value);
  }

  // --- stack and memo ------------------------------------------------------------------------

  private push(value: PickleValue): void {
    if (this.stack.length >= this.limits.maxStackItems) this.fail(`the pickle stack exceeds ${this.limits.maxStackItems} items; refusing it`);
    this.stack.push(value);
  }

  private topMark(): number {
    return this.marks.length > 0 ? this.marks[this.marks.length - 1]! : 0;
  }

  private pop(): PickleValue {
    if (this.stack.length <= this.topMark()) this.fail(`pickle stack underflow at byte ${this.origin + this.position - 1}`);
    return this.stack.pop()!;
  }

  private top(): PickleValue {
    if (this.stack.length <= this.topMark()) this.fail(`pickle stack underflow at byte ${this.origin + this.position - 1}`);
    return this.stack[this.stack.length - 1]!;
  }

  private popMark(): PickleValue[] {
    const mark = this.marks.pop();
    if (mark === undefined) this.fail(`pickle opcode at byte ${this.origin + this.position - 1} needs a MARK that is missing`);
    return this.stack.splice(mark);
  }

  private memoize(index: number): void {
    const isNew = index >= this.memo.length && !this.sparseMemo.has(index);
    if (isNew && this.memo.length + this.sparseMemo.size >= this.limits.maxMemoEntries) {
      this.fail(`the pickle memo exceeds ${this.limits.maxMemoEntries} entries; refusing it`);
    }
    if (index <= this.memo.length) this.memo[index] = this.top();
    else this.sparseMemo.set(index, this.top());
  }

  private recall(index: number): PickleValue {
    if (index < this.memo.length) return this.memo[index]!;
    if (!this.sparseMemo.has(index)) this.fail(`pickle memo entry ${index} is read before it is written`);
    return this.sparseMemo.get(index)!;
  }

  // --- containers ----------------------------------------------------------------------------

  /** Containers that consumers walk into; everything else (globals, tensors, bytes) is a leaf. */
  private isContainer(value: PickleValue): value is PickleValue[] | PickleDict | PickleSet | PickleObject | NumpyArray {
    return Array.isArray(value) || value instanceof Map || value instanceof Set || value instanceof PickleObject || value instanceof NumpyArray;
  }

  private depthOf(value: PickleValue): number {
    return this.isContainer(value) ? (this.depths.get(value) ?? 1) : 0;
  }

  /** Records that `container` holds `children`, refusing data nested beyond the limit. */
  private contain<T extends PickleValue>(container: T, children: readonly PickleValue[]): T {
    if (!this.isContainer(container)) return container;
    let depth = this.depthOf(container);
    for (const child of children) depth = Math.max(depth, this.depthOf(child) + 1);
    if (depth > this.limits.maxNesting) {
      this.fail(`the pickle nests containers deeper than ${this.limits.maxNesting} levels; refusing it`);
    }
    if (depth > 1) this.depths.set(container, depth);
    return container;
  }

  private append(target: PickleValue, items: readonly PickleValue[]): void {
    const list = Array.isArray(target) ? target : target instanceof PickleObject ? target.listItems : undefined;
    if (!list) this.fail(`the pickle appends to a value that is not a list at byte ${this.origin + this.position - 1}`);
    for (const item of items) list.push(item);
    this.contain(target, items);
  }

  private setItems(target: PickleValue, items: readonly PickleValue[]): void {
    const dict = target instanceof Map ? target : target instanceof PickleObject ? target.dictItems : undefined;
    if (!dict) this.fail(`the pickle sets items on a value that is not a dict at byte ${this.origin + this.position - 1}`);
    if (items.length % 2 !== 0) this.fail('the pickle sets a dict key without a value');
    for (let i = 0; i < items.length; i += 2) dict.set(items[i]!, items[i + 1]!);
    this.contain(target, items);
  }

  private build(instance: PickleValue, state: PickleValue): void {
    if (instance instanceof PickleObject || instance instanceof NumpyDType) instance.setState(state);
    else if (instance instanceof NumpyArray) instance.setState(state, this);
    // Other values (an OrderedDict's _metadata, say) carry no state that matters here.
    this.contain(instance, [state]);
  }

  // --- globals and calls ---------------------------------------------------------------------

  private resolveGlobal(rawModule: string, name: string): PickleGlobal {
    const module = canonicalModule(rawModule);
    if (module.startsWith('torch') && name.endsWith('Storage')) return new TorchStorageType(module, name, TORCH_STORAGE_DTYPES[name]);
    if (module === 'torch' && Object.hasOwn(TORCH_DTYPES, name)) return new TorchDType(module, name, TORCH_DTYPES[name]);
    const global = new PickleGlobal(module, name);
    const qualified = global.qualifiedName;
    if (this.isDangerous(qualified)) {
      this.warn(`the pickle names ${qualified}, which would refuse the file if it were called`);
    } else if (!BUILDERS.has(qualified) && !FAMILIAR_PREFIXES.some((prefix) => qualified.startsWith(prefix))) {
      this.warn(`unknown global ${qualified} is kept as an inert placeholder`);
    }
    return global;
  }

  /** REDUCE, NEWOBJ, INST and OBJ: an allow-listed builder, or a placeholder; never Python. */
  call(callable: PickleValue, args: PickleValue): PickleValue {
    if (!Array.isArray(args)) this.fail('the pickle calls something with arguments that are not a tuple');
    if (!(callable instanceof PickleGlobal)) {
      this.warn('the pickle calls a value that is not a global; kept as an inert placeholder');
      return this.contain(new PickleObject(callable instanceof PickleObject ? `${callable.className}()` : 'call', args), args);
    }
    const name = callable.qualifiedName;
    if (this.isDangerous(name)) this.fail(refusal(name));
    const builder = BUILDERS.get(name);
    return this.contain(builder ? builder(args, this) : new PickleObject(name, args), args);
  }

  private isDangerous(qualifiedName: string): boolean {
    let verdict = this.dangerous.get(qualifiedName);
    if (verdict === undefined) {
      verdict = isDangerousGlobal(qualifiedName);
      this.dangerous.set(qualifiedName, verdict);
    }
    return verdict;
  }

  private persistent(id: PickleValue): PickleValue {
    if (!this.persistentLoad) this.fail('the pickle refers to external data (a persistent id) that nothing here supplies');
    return this.persistentLoad(id);
  }
}

function normalizeInt(value: bigint): number | bigint {
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
}

/** Python 2 str: torch.load decodes it as UTF-8; binary contents stay bytes. */
function python2Str(bytes: Uint8Array): string | Buffer {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return Buffer.from(bytes);
  }
}

const SIMPLE_ESCAPES: Readonly<Record<string, number>> = {
  '\\': 0x5c, "'": 0x27, '"': 0x22, a: 0x07, b: 0x08, f: 0x0c, n: 0x0a, r: 0x0d, t: 0x09, v: 0x0b,
};

/** The STRING opcode's argument: a quoted Python 2 str literal, unescaped as codecs.escape_decode does. */
function unescapeQuoted(line: Buffer, context: BuildContext): Buffer {
  const text = line.toString('latin1');
  const quote = text[0];
  if (text.length < 2 || (quote !== "'" && quote !== '"') || text[text.length - 1] !== quote) {
    context.fail('the STRING opcode argument is not quoted');
  }
  const body = text.slice(1, -1);
  const out: number[] = [];
  for (let i = 0; i < body.length; i++) {
    const char = body[i]!;
    if (char !== '\\' || i + 1 >= body.length) {
      out.push(char.charCodeAt(0));
      continue;
    }
    const next = body[++i]!;
    const simple = SIMPLE_ESCAPES[next];
    if (simple !== undefined) {
      out.push(simple);
    } else if (next === 'x') {
      const hex = body.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) context.fail('invalid \\x escape in a STRING opcode');
      out.push(parseInt(hex, 16));
      i += 2;
    } else if (/[0-7]/.test(next)) {
      const octal = /^[0-7]{1,3}/.exec(body.slice(i))![0];
      out.push(parseInt(octal, 8) & 0xff);
      i += octal.length - 1;
    } else {
      out.push(0x5c, next.charCodeAt(0));
    }
  }
  return Buffer.from(out);
}

/** The UNICODE opcode's argument: latin-1 text where \uXXXX and \UXXXXXXXX are escapes. */
function decodeRawUnicodeEscape(line: Buffer, context: BuildContext): string {
  const text = line.toString('latin1');
  let out = '';
  let i = 0;
  while (i < text.length) {
    if (text[i] !== '\\') {
      out += text[i++];
      continue;
    }
    let run = 0;
    while (text[i + run] === '\\') run++;
    const marker = text[i + run];
    // Only an odd run of backslashes followed by u or U escapes; the others are literal.
    if (run % 2 === 0 || (marker !== 'u' && marker !== 'U')) {
      out += text.slice(i, i + run);
      i += run;
      continue;
    }
    out += '\\'.repeat(run - 1);
    const digits = marker === 'u' ? 4 : 8;
    const hex = text.slice(i + run + 1, i + run + 1 + digits);
    if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== digits) context.fail('truncated \\u escape in a UNICODE opcode');
    const codePoint = parseInt(hex, 16);
    if (codePoint > 0x10ffff) context.fail('\\U escape beyond U+10FFFF in a UNICODE opcode');
    out += String.fromCodePoint(codePoint);
    i += run + 1 + digits;
  }
  return out;
}
