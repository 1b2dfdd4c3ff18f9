import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { CheckpointError } from '../../server/src/engine/errors';
import { BufferSource } from '../../server/src/engine/io/byteSource';
import { decodeToFloat64 } from '../../server/src/engine/formats/dtype';
import {
  NumpyArray,
  PickleGlobal,
  PickleObject,
  TorchStorageType,
  TorchTensor,
  isDangerousGlobal,
  unpickle,
  unpickleSource,
  type PickleValue,
  type UnpickleOptions,
} from '../../server/src/engine/formats/pickle';
import { fixturePath, makeTempDir } from '../helpers';

const FILE = 'test.pkl';

function load(bytes: Buffer | string, options: Partial<UnpickleOptions> = {}): ReturnType<typeof unpickle> {
  return unpickle(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes, { file: FILE, ...options });
}

/** Unpickling fails with a CheckpointError naming the file and matching `problem`. */
function assertRefused(bytes: Buffer | string, problem: RegExp, options: Partial<UnpickleOptions> = {}): void {
  assert.throws(
    () => load(bytes, options),
    (error: unknown) => {
      assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${String(error)}`);
      assert.equal(error.file, FILE);
      assert.match(error.message, problem);
      return true;
    },
  );
}

/**
 * The tagged JSON form make_fixtures.py writes for the sample object: numbers and big ints,
 * bytes as hex, lists (tuples too), dicts as pairs, sets sorted, numpy arrays by their values.
 */
function tagged(value: PickleValue): unknown {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return value;
  if (typeof value === 'number') return { number: Number.isFinite(value) ? value : value > 0 ? 'inf' : Number.isNaN(value) ? 'nan' : '-inf' };
  if (typeof value === 'bigint') return { int: value.toString() };
  if (value instanceof Uint8Array) return { bytes: Buffer.from(value).toString('hex') };
  if (Array.isArray(value)) return { list: value.map(tagged) };
  if (value instanceof Map) return { dict: [...value].map(([key, item]) => [tagged(key), tagged(item)]) };
  if (value instanceof Set) return { set: sortedByJson([...value].map(tagged)) };
  if (value instanceof NumpyArray) {
    const dtype = value.dtype?.dtype;
    assert.ok(dtype && value.data instanceof Uint8Array);
    const values = Array.from(decodeToFloat64(dtype, value.data, value.dtype?.littleEndian));
    return { ndarray: { dtype, shape: [...value.shape], values } };
  }
  if (value instanceof PickleObject) return { object: value.className, state: tagged(value.attributes()) };
  assert.fail(`unexpected value ${String(value)}`);
}

function sortedByJson(items: unknown[]): unknown[] {
  return items.sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
}

/** Python's json.dumps sorts with other spacing; sort the expected sets the same way as ours. */
function normalizeSets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalizeSets);
  if (typeof value !== 'object' || value === null) return value;
  const entries = Object.entries(value).map(([key, item]) => [key, normalizeSets(item)] as const);
  const out = Object.fromEntries(entries) as Record<string, unknown>;
  if (Array.isArray(out.set)) out.set = sortedByJson(out.set);
  return out;
}

describe('pickle protocols written by Python', () => {
  const folder = fixturePath('torch', 'pickles');
  const expected = normalizeSets(JSON.parse(readFileSync(path.join(folder, 'expected.json'), 'utf8')));

  for (let protocol = 0; protocol <= 5; protocol++) {
    test(`protocol ${protocol} reads every kind of value`, () => {
      const bytes = readFileSync(path.join(folder, `protocol${protocol}.pkl`));
      const result = load(bytes);
      assert.deepEqual(tagged(result.value), expected);
      assert.equal(result.end, bytes.length);
      assert.deepEqual(result.warnings, []);
    });
  }

  test('a truncated pickle is a clear error', () => {
    const bytes = readFileSync(path.join(folder, 'protocol2.pkl'));
    assertRefused(bytes.subarray(0, bytes.length >> 1), /truncated pickle/);
    assertRefused(bytes.subarray(0, bytes.length - 1), /truncated pickle: opcode needs 1 byte/);
  });
});

describe('protocol 0 text opcodes', () => {
  test('ints, booleans, longs, floats and quoted strings', () => {
    const value = load("(I42\nI01\nI00\nL123456789012345678901L\nF-1.5e-3\nFinf\nS'a\\'b\\x41\\n'\nVcaf\\u00e9\\U0001f600\nt.").value;
    assert.deepEqual(value, [42, true, false, 123456789012345678901n, -1.5e-3, Infinity, "a'bA\n", 'café😀']);
  });

  test('memo by text index, and INST of an allow-listed class', () => {
    const value = load('(lp0\nI1\nag0\n(icollections\nOrderedDict\np1\na.').value;
    assert.ok(Array.isArray(value) && value.length === 2);
    assert.ok(value[1] instanceof Map);
  });
});

describe('calls that would run code are refused and never run', () => {
  const temp = makeTempDir('pickle-test-');
  const marker = path.join(temp.dir, 'pwned');
  const command = `touch ${marker}`;

  function binUnicode(text: string): string {
    const length = Buffer.alloc(4);
    length.writeUInt32LE(Buffer.byteLength(text));
    return `X${length.toString('latin1')}${text}`;
  }

  const cases: Array<[string, string, RegExp]> = [
    ['protocol 0 REDUCE of os.system', `cos\nsystem\n(S'${command}'\ntR.`, /pickle calls os\.system, which is never executed; refusing this file/],
    ['protocol 2 REDUCE of os.system', `\x80\x02cos\nsystem\nq\x00${binUnicode(command)}q\x01\x85q\x02Rq\x03.`, /pickle calls os\.system/],
    ['posix.system through STACK_GLOBAL', `\x80\x04\x8c\x05posix\x8c\x06system\x93${binUnicode(command)}\x85R.`, /pickle calls posix\.system/],
    ['builtins.eval under its Python 2 name', `c__builtin__\neval\n(S'1'\ntR.`, /pickle calls builtins\.eval/],
    ['subprocess.Popen through NEWOBJ', `\x80\x02csubprocess\nPopen\n]${binUnicode('touch')}a\x85\x81.`, /pickle calls subprocess\.Popen/],
    ['INST of subprocess.check_output', `(S'touch'\nisubprocess\ncheck_output\n.`, /pickle calls subprocess\.check_output/],
    ['nt.system inside copyreg._reconstructor', `ccopy_reg\n_reconstructor\n(cnt\nsystem\nc__builtin__\nobject\nNtR.`, /pickle calls nt\.system/],
    ['posix.system as the base of copyreg._reconstructor', `ccopy_reg\n_reconstructor\n(c__builtin__\nobject\ncposix\nsystem\nS'x'\ntR.`, /pickle calls posix\.system/],
  ];
  for (const [label, pickle, problem] of cases) {
    test(label, () => {
      assertRefused(pickle, problem);
      assert.equal(existsSync(marker), false, 'the command did not run');
    });
  }

  test('merely naming a dangerous global is inert', () => {
    const result = load('cos\nsystem\n.');
    assert.ok(result.value instanceof PickleGlobal);
    assert.equal(result.value.qualifiedName, 'os.system');
    assert.deepEqual(result.warnings, ['the pickle names os.system, which would refuse the file if it were called']);
  });

  test('isDangerousGlobal knows the usual suspects and spares the usual classes', () => {
    for (const name of ['os.system', 'subprocess.run', 'builtins.exec', 'builtins.getattr', 'socket.socket', 'runpy._run_code']) {
      assert.equal(isDangerousGlobal(name), true, name);
    }
    for (const name of ['collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'argparse.Namespace', 'pathlib.PosixPath']) {
      assert.equal(isDangerousGlobal(name), false, name);
    }
  });

  test.after(() => temp.cleanup());
});

describe('hostile structure is bounded', () => {
  test('100000 nested lists give a clear error quickly', () => {
    const started = Date.now();
    assertRefused(`\x80\x02${']'.repeat(100_000)}${'a'.repeat(99_999)}.`, /nests containers deeper than 1000 levels/);
    assert.ok(Date.now() - started < 2000);
  });

  test('100000 nested marks give a clear error', () => {
    assertRefused(`${'('.repeat(100_000)}t.`, /nests marks deeper than 1000 levels/);
  });

  test('nesting built bottom-up through the memo is caught too', () => {
    // Each step makes a new list holding the previous one, keeping the stack flat.
    assertRefused(`\x80\x02]q\x00${']h\x00aq\x000'.repeat(5000)}h\x00.`, /nests containers deeper than 1000 levels/);
  });

  test('a huge declared string length is refused without allocating', () => {
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(2n ** 40n);
    const before = process.memoryUsage().arrayBuffers;
    for (const opcode of ['\x8d', '\x8e', '\x96']) {
      const bytes = Buffer.concat([Buffer.from(`\x80\x04${opcode}`, 'latin1'), length, Buffer.from('abc')]);
      assertRefused(bytes, /declares 1099511627776 bytes but only 3 remain/);
    }
    assert.ok(process.memoryUsage().arrayBuffers - before < 64 * 1024 * 1024);
  });

  test('a huge declared length is refused through unpickleSource too, without widening its window', async () => {
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(2n ** 40n);
    const source = new BufferSource(Buffer.concat([Buffer.from('\x80\x04\x8d', 'latin1'), length, Buffer.alloc(100_000)]), FILE);
    await assert.rejects(unpickleSource(source, 0), /test\.pkl: truncated pickle: BINUNICODE8 at byte 11 declares 1099511627776 bytes/);
  });

  test('a 32-bit length beyond the input is truncation, not allocation', () => {
    assertRefused('\x80\x03B\xff\xff\xff\x7fabc', /truncated pickle: BINBYTES needs 2147483647 bytes at byte 7, but only 3 remain/);
  });

  test('an opcode-count bomb is cut off at the limit', () => {
    const started = Date.now();
    assertRefused(`${'N0'.repeat(100_000)}N.`, /runs more than 10000 opcodes/, { limits: { maxOpcodes: 10_000 } });
    assert.ok(Date.now() - started < 1000);
    assert.equal(load(`${'N0'.repeat(100_000)}N.`).value, null, 'the default limit allows it');
  });

  test('a reference bomb costs linear time in the interpreter', () => {
    // 60 levels of (x, x): 2^60 leaves if expanded, 60 tuples as built.
    const value = load(`\x80\x02]q\x00${'h\x00h\x00\x86q\x000'.repeat(60)}h\x00.`).value;
    let depth = 0;
    for (let node = value; Array.isArray(node) && node.length === 2; node = node[0]!) depth++;
    assert.equal(depth, 60);
  });

  test('memo and stack limits', () => {
    const twentyPuts = Array.from({ length: 20 }, (_, index) => `Nq${String.fromCharCode(index)}0`).join('');
    assertRefused(`\x80\x02${twentyPuts}N.`, /memo exceeds 10 entries/, { limits: { maxMemoEntries: 10 } });
    assertRefused(`${'N'.repeat(200)}.`, /stack exceeds 100 items/, { limits: { maxStackItems: 100 } });
  });

  test('an integer with too many bytes is refused', () => {
    assertRefused(`\x80\x02\x8b\x00\x10\x00\x00${'\x01'.repeat(4096)}.`, /integer of 4096 bytes is too large/);
  });
});

describe('malformed pickles', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['stack underflow', '\x80\x02a.', /pickle stack underflow/],
    ['missing mark', '\x80\x02Nt.', /needs a MARK that is missing/],
    ['unknown opcode', '\x80\x02\xff.', /invalid pickle opcode 0xff at byte 2/],
    ['unsupported protocol', '\x80\x09N.', /unsupported pickle protocol 9/],
    ['memo read before write', '\x80\x02h\x07.', /memo entry 7 is read before it is written/],
    ['appending to a dict', '\x80\x02}Na.', /appends to a value that is not a list/],
    ['unquoted STRING', 'Sabc\n.', /STRING opcode argument is not quoted/],
    ['out-of-band buffer', '\x80\x05\x97.', /out-of-band buffers/],
    ['extension registry', '\x80\x02\x82\x01.', /extension registry/],
    ['persistent id without a loader', '\x80\x02NQ.', /persistent id/],
    ['no STOP', '\x80\x02N', /truncated pickle: opcode needs 1 byte at byte 3, but only 0 remain/],
  ];
  for (const [label, pickle, problem] of cases) {
    test(label, () => assertRefused(pickle, problem));
  }
});

describe('globals', () => {
  test('an unknown global becomes a placeholder with a warning', () => {
    const result = load('\x80\x02cmymodule\nThing\nq\x00)\x81q\x01}q\x02X\x01\x00\x00\x00aK\x01sb.');
    assert.ok(result.value instanceof PickleObject);
    assert.equal(result.value.className, 'mymodule.Thing');
    assert.deepEqual([...result.value.attributes()], [['a', 1]]);
    assert.deepEqual(result.warnings, ['unknown global mymodule.Thing is kept as an inert placeholder']);
  });

  test('familiar classes become placeholders silently', () => {
    const result = load('\x80\x02cargparse\nNamespace\n)\x81}X\x02\x00\x00\x00lrG?\xb9\x99\x99\x99\x99\x99\x9asb.');
    assert.ok(result.value instanceof PickleObject);
    assert.equal(result.value.attributes().get('lr'), 0.1);
    assert.deepEqual(result.warnings, []);
  });

  test('torch tensors are rebuilt as inert descriptions around what the persistent id gave', () => {
    const pickle =
      '\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nHalfStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x01K\x02K\x02\x86K\x01K\x02\x86\x89ccollections\nOrderedDict\n)RtR.';
    const seen: PickleValue[] = [];
    const value = load(pickle, { persistentLoad: (id) => (seen.push(id), 'storage-0') }).value;
    assert.ok(value instanceof TorchTensor);
    assert.equal(value.storage, 'storage-0');
    assert.equal(value.storageOffset, 1);
    assert.deepEqual(value.shape, [2, 2]);
    assert.deepEqual(value.strides, [1, 2]);
    assert.equal(seen.length, 1);
    const [kind, storageType] = seen[0] as PickleValue[];
    assert.equal(kind, 'storage');
    assert.ok(storageType instanceof TorchStorageType);
    assert.equal(storageType.dtype, 'F16');
  });
});

describe('unpickleSource', () => {
  test('widens its window for a pickle larger than the first read and reports where it ends', async () => {
    const payload = Buffer.alloc(200_000, 7);
    const length = Buffer.alloc(4);
    length.writeUInt32LE(payload.length);
    const pickle = Buffer.concat([Buffer.from('\x80\x03B', 'latin1'), length, payload, Buffer.from('.')]);
    const source = new BufferSource(Buffer.concat([Buffer.alloc(5), pickle, Buffer.from('trailing storage bytes')]), FILE);
    const result = await unpickleSource(source, 5);
    assert.ok(result.value instanceof Uint8Array);
    assert.equal(result.value.length, payload.length);
    assert.equal(result.end, 5 + pickle.length);
  });

  test('a pickle cut off by the end of the source is truncated, with file offsets', async () => {
    await assert.rejects(unpickleSource(new BufferSource(Buffer.from('xx\x80\x02(K\x01', 'latin1'), FILE), 2), /truncated pickle: opcode needs 1 byte at byte 7/);
  });
});
