import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CancelledError, CheckpointError } from '../../server/src/engine/errors';
import type { Checkpoint } from '../../server/src/engine/formats/checkpoint';
import { safetensorsReader } from '../../server/src/engine/formats/safetensors';
import { makeTempDir } from '../helpers';
import { tensorNamed, usingCheckpoint } from './checkpointTesting';
import {
  bytes,
  encodeRaw,
  encodeSafetensors,
  float32,
  float64,
  int16,
  int32,
  int64,
  int8,
  lengthPrefix,
  uint16Codes,
  uint32,
  uint64,
  type TensorSpec,
} from './safetensorsWriter';

const MB = 1024 * 1024;

let temp: { dir: string; cleanup: () => void };
before(() => {
  temp = makeTempDir('safetensors-test-');
});
after(() => temp.cleanup());

let fileCounter = 0;
function writeTemp(contents: Buffer, name = `file${++fileCounter}.safetensors`): string {
  const file = path.join(temp.dir, name);
  writeFileSync(file, contents);
  return file;
}

function withCheckpoint<T>(file: string, use: (checkpoint: Checkpoint) => Promise<T>): Promise<T> {
  return usingCheckpoint(safetensorsReader.open(file), use);
}

/** Opening `file` fails with a CheckpointError that names `named` (default: the file) and matches `problem`. */
async function assertRefused(file: string, problem: RegExp, named = file): Promise<void> {
  await assert.rejects(safetensorsReader.open(file), (error: unknown) => {
    assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${String(error)}`);
    assert.equal(error.file, named);
    assert.ok(error.message.startsWith(`${named}: `), `message names the file: ${error.message}`);
    assert.match(error.problem, problem);
    return true;
  });
}

function spec(name: string, dtype: string, shape: number[], data: Buffer): TensorSpec {
  return { name, dtype, shape, data };
}

// ---------------------------------------------------------------------------------------

describe('safetensors dtypes', () => {
  /** Each dtype with its stored bytes and the exact float64 values they decode to. */
  const cases: { tensor: TensorSpec; expected: number[] }[] = [
    {
      tensor: spec('f64', 'F64', [5], float64(0.1, -2.5, 1e-300, -0, Number.MAX_VALUE)),
      expected: [0.1, -2.5, 1e-300, -0, Number.MAX_VALUE],
    },
    {
      tensor: spec('f32', 'F32', [2, 2], float32(0.5, -1, 2 ** -149, Infinity)),
      expected: [0.5, -1, 2 ** -149, Infinity],
    },
    {
      // Zeros, smallest and largest subnormal, smallest normal, 1, 1/3, -2, max, ±inf, NaNs.
      tensor: spec(
        'f16',
        'F16',
        [13],
        uint16Codes(0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x3c00, 0x3555, 0xc000, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0x7c01),
      ),
      expected: [0, -0, 2 ** -24, 1023 * 2 ** -24, 2 ** -14, 1, 0.333251953125, -2, 65504, Infinity, -Infinity, NaN, NaN],
    },
    {
      // Zeros, 1, -3, 0.25, subnormals, smallest normal, max, ±inf, NaN, 3.140625.
      tensor: spec(
        'bf16',
        'BF16',
        [13],
        uint16Codes(0x0000, 0x8000, 0x3f80, 0xc040, 0x3e80, 0x0001, 0x007f, 0x0080, 0x7f7f, 0x7f80, 0xff80, 0x7fc0, 0x4049),
      ),
      expected: [0, -0, 1, -3, 0.25, 2 ** -133, 127 * 2 ** -133, 2 ** -126, (2 - 2 ** -7) * 2 ** 127, Infinity, -Infinity, NaN, 3.140625],
    },
    {
      // e4m3fn: bias 7, subnormals m·2^-9, exponent 15 is still finite, only S.1111.111 is NaN.
      tensor: spec('f8e4m3', 'F8_E4M3', [13], bytes(0x00, 0x80, 0x01, 0x07, 0x08, 0x38, 0x3c, 0x40, 0xc4, 0x78, 0x7e, 0xfe, 0x7f)),
      expected: [0, -0, 2 ** -9, 7 * 2 ** -9, 2 ** -6, 1, 1.5, 2, -3, 256, 448, -448, NaN],
    },
    {
      // e5m2: bias 15, subnormals m·2^-16, IEEE infinities and NaNs.
      tensor: spec('f8e5m2', 'F8_E5M2', [13], bytes(0x00, 0x80, 0x01, 0x03, 0x04, 0x3c, 0x3e, 0xc0, 0x7b, 0x7c, 0xfc, 0x7d, 0x7f)),
      expected: [0, -0, 2 ** -16, 3 * 2 ** -16, 2 ** -14, 1, 1.5, -2, 57344, Infinity, -Infinity, NaN, NaN],
    },
    {
      tensor: spec('i64', 'I64', [5], int64(-(2n ** 63n), -1n, 0n, 2n ** 53n, 2n ** 63n - 1n)),
      expected: [-(2 ** 63), -1, 0, 2 ** 53, 2 ** 63],
    },
    {
      tensor: spec('u64', 'U64', [3], uint64(0n, 2n ** 53n + 2n, 2n ** 64n - 1n)),
      expected: [0, 2 ** 53 + 2, 2 ** 64],
    },
    { tensor: spec('i32', 'I32', [3], int32(-(2 ** 31), 2 ** 31 - 1, -7)), expected: [-(2 ** 31), 2 ** 31 - 1, -7] },
    { tensor: spec('u32', 'U32', [3], uint32(0, 2 ** 32 - 1, 7)), expected: [0, 2 ** 32 - 1, 7] },
    { tensor: spec('i16', 'I16', [3], int16(-32768, 32767, -1)), expected: [-32768, 32767, -1] },
    { tensor: spec('u16', 'U16', [3], uint16Codes(0, 65535, 1234)), expected: [0, 65535, 1234] },
    { tensor: spec('i8', 'I8', [3], int8(-128, 127, -1)), expected: [-128, 127, -1] },
    { tensor: spec('u8', 'U8', [3], bytes(0, 255, 7)), expected: [0, 255, 7] },
    { tensor: spec('bool', 'BOOL', [2, 2], bytes(0, 1, 1, 0)), expected: [0, 1, 1, 0] },
  ];

  test('every readable dtype decodes exactly, including subnormals, infinities and NaN', async () => {
    const file = writeTemp(encodeSafetensors(cases.map((c) => c.tensor)));
    await withCheckpoint(file, async (checkpoint) => {
      assert.equal(checkpoint.format, 'safetensors');
      assert.deepEqual(checkpoint.warnings, []);
      assert.deepEqual(
        checkpoint.tensors.map((tensor) => tensor.name),
        cases.map((c) => c.tensor.name),
      );
      for (const { tensor: written, expected } of cases) {
        const tensor = tensorNamed(checkpoint, written.name);
        assert.equal(tensor.dtype, written.dtype);
        assert.deepEqual(tensor.shape, written.shape);
        assert.equal(tensor.elementCount, expected.length);
        assert.equal(tensor.byteSize, written.data.length);
        // deepStrictEqual compares with SameValue: NaN equals NaN and -0 differs from 0.
        assert.deepStrictEqual(Array.from(await tensor.read()), expected, written.dtype);
        assert.deepStrictEqual(Array.from(await tensor.read(1, 2)), expected.slice(1, 3), `${written.dtype} partial read`);
      }
    });
  });

  test('C64 is listed but reading it is refused clearly', async () => {
    const file = writeTemp(encodeSafetensors([spec('complex', 'C64', [2], float32(1, 2, 3, 4)), spec('real', 'F32', [1], float32(5))]));
    await withCheckpoint(file, async (checkpoint) => {
      const complex = tensorNamed(checkpoint, 'complex');
      assert.equal(complex.dtype, 'C64');
      assert.equal(complex.byteSize, 16);
      await assert.rejects(complex.read(), (error: unknown) => error instanceof CheckpointError && /complex/.test(error.message));
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'real').read()), [5]);
    });
  });

  test('newer dtypes (F8_E8M0, F4, F6_*) are layout-checked, then left out with a warning', async () => {
    const file = writeTemp(
      encodeSafetensors([
        spec('scales', 'F8_E8M0', [4], bytes(127, 128, 0, 255)),
        spec('packed', 'F4', [2, 3], bytes(0x12, 0x34, 0x56)),
        spec('six', 'F6_E2M3', [4], bytes(1, 2, 3)),
        spec('kept', 'F32', [1], float32(1.25)),
      ]),
    );
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(
        checkpoint.tensors.map((tensor) => tensor.name),
        ['kept'],
      );
      assert.equal(checkpoint.warnings.length, 3);
      assert.match(checkpoint.warnings[0]!, /"scales" has dtype F8_E8M0, which this tool does not decode/);
      assert.match(checkpoint.warnings[1]!, /"packed" has dtype F4/);
    });
  });

  test('a sub-byte dtype whose elements do not fill whole bytes is refused', async () => {
    const file = writeTemp(encodeSafetensors([spec('odd', 'F4', [3], bytes(0x12, 0x30))]));
    await assertRefused(file, /tensor "odd": 3 elements of F4 do not fill a whole number of bytes/);
  });
});

describe('safetensors header contents', () => {
  test('__metadata__ becomes the checkpoint metadata', async () => {
    const metadata = { format: 'pt', base_model: 'org/model', note: 'ünïcode ✓' };
    const file = writeTemp(encodeSafetensors([spec('w', 'F32', [1], float32(1))], metadata));
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(checkpoint.metadata, metadata);
      assert.deepEqual(
        checkpoint.tensors.map((tensor) => tensor.name),
        ['w'],
      );
    });
  });

  test('a "__proto__" metadata key stays plain data', async () => {
    const file = writeTemp(encodeRaw('{"__metadata__": {"__proto__": "x"}}'));
    await withCheckpoint(file, async (checkpoint) => {
      assert.equal(Object.getPrototypeOf(checkpoint.metadata), Object.prototype);
      assert.equal(Object.getOwnPropertyDescriptor(checkpoint.metadata, '__proto__')?.value, 'x');
    });
  });

  test('tensors are listed in on-disk order whatever the header order, integer-like names included', async () => {
    const header = {
      '10': { dtype: 'U8', shape: [1], data_offsets: [2, 3] },
      b: { dtype: 'U8', shape: [1], data_offsets: [0, 1] },
      '2': { dtype: 'U8', shape: [1], data_offsets: [1, 2] },
      empty: { dtype: 'F32', shape: [0, 4], data_offsets: [3, 3] },
    };
    const file = writeTemp(encodeRaw(JSON.stringify(header), bytes(7, 8, 9)));
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(
        checkpoint.tensors.map((tensor) => tensor.name),
        ['b', '2', '10', 'empty'],
      );
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, '10').read()), [9]);
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'empty').read()), []);
    });
  });

  test('sniff accepts safetensors names and headers, and nothing else', () => {
    const head = encodeRaw('{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}').subarray(0, 64);
    assert.ok(safetensorsReader.sniff('/x/model.safetensors', Buffer.alloc(0)));
    assert.ok(safetensorsReader.sniff('/x/MODEL.SAFETENSORS', Buffer.alloc(0)));
    assert.ok(safetensorsReader.sniff('/x/model.safetensors.index.json', Buffer.alloc(0)));
    assert.ok(safetensorsReader.sniff('/x/weights.bin', head));
    assert.ok(!safetensorsReader.sniff('/x/weights.bin', Buffer.from('PK\x03\x04 not safetensors')));
    assert.ok(!safetensorsReader.sniff('/x/config.json', Buffer.from('{"weight_map": {}}')));
    // A brace at byte 8 behind an implausible length is not a header.
    assert.ok(!safetensorsReader.sniff('/x/data', Buffer.concat([lengthPrefix(2n ** 60n), Buffer.from('{}')])));
  });
});

describe('safetensors bad input', () => {
  const valid = (): Buffer =>
    encodeSafetensors([spec('a', 'F32', [2, 2], float32(1, 2, 3, 4)), spec('b', 'F16', [2], uint16Codes(0x3c00, 0x4000))]);

  /** A file whose header is `header` (an object, serialized) with `dataBytes` zero bytes of data. */
  const withHeader = (header: unknown, dataBytes = 64): string =>
    writeTemp(encodeRaw(JSON.stringify(header), Buffer.alloc(dataBytes)));

  test('empty file', async () => {
    await assertRefused(writeTemp(Buffer.alloc(0)), /the file is empty/);
  });

  test('file shorter than the length prefix', async () => {
    await assertRefused(writeTemp(Buffer.from([1, 0, 0])), /only 3 bytes: too short/);
  });

  test('truncated file: data cut short', async () => {
    const whole = valid();
    const file = writeTemp(whole.subarray(0, whole.length - 3));
    await assertRefused(file, /tensor "b": data_offsets \[16, 20\] run past the end of the 17-byte data section: the file is truncated/);
  });

  test('truncated file: header cut short', async () => {
    await assertRefused(writeTemp(valid().subarray(0, 20)), /header length \d+ runs past the end of the file \(12 bytes follow it\)/);
  });

  test('header length beyond the file', async () => {
    await assertRefused(writeTemp(encodeRaw('{}', Buffer.alloc(0), 4096n)), /header length 4096 runs past the end of the file/);
  });

  test('absurd header length (2^60)', async () => {
    await assertRefused(writeTemp(encodeRaw('{}', Buffer.alloc(16), 2n ** 60n)), /header length 1152921504606846976 runs past the end/);
  });

  test('header over the 100 MB limit, though inside the (sparse) file', async () => {
    const file = path.join(temp.dir, 'huge-header.safetensors');
    const handle = openSync(file, 'w');
    try {
      writeSync(handle, Buffer.concat([lengthPrefix(150_000_000n), Buffer.from('{')]));
      ftruncateSync(handle, 8 + 150_000_000);
    } finally {
      closeSync(handle);
    }
    await assertRefused(file, /header length 150000000 exceeds the 100000000-byte limit/);
  });

  test('header that is not UTF-8', async () => {
    await assertRefused(writeTemp(encodeRaw(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))), /header is not valid UTF-8/);
  });

  test('invalid JSON', async () => {
    await assertRefused(writeTemp(encodeRaw('{"a": {"dtype": "F32",')), /header is not valid JSON/);
  });

  for (const [json, kind] of [
    ['[1, 2]', 'an array'],
    ['"text"', 'a string'],
    ['null', 'null'],
    ['42', 'a number'],
  ] as const) {
    test(`non-object JSON: ${json}`, async () => {
      await assertRefused(writeTemp(encodeRaw(json)), new RegExp(`header is ${kind}.*, not a JSON object`));
    });
  }

  test('unknown dtype', async () => {
    await assertRefused(withHeader({ a: { dtype: 'F7', shape: [1], data_offsets: [0, 1] } }), /tensor "a": unknown dtype "F7"/);
  });

  test('dtype names from other formats are unknown here', async () => {
    await assertRefused(withHeader({ a: { dtype: 'QINT8', shape: [1], data_offsets: [0, 1] } }), /unknown dtype "QINT8"/);
  });

  test('entry that is not an object, or lacks its fields', async () => {
    await assertRefused(withHeader({ a: 3 }), /tensor "a": entry is a number \(3\), not an object/);
    await assertRefused(withHeader({ a: { shape: [1], data_offsets: [0, 4] } }), /tensor "a": dtype is missing/);
    await assertRefused(withHeader({ a: { dtype: 'F32', data_offsets: [0, 4] } }), /tensor "a": shape is missing/);
    await assertRefused(withHeader({ a: { dtype: 'F32', shape: [1] } }), /tensor "a": data_offsets must be an array/);
  });

  test('offsets out of range', async () => {
    await assertRefused(
      withHeader({ a: { dtype: 'F32', shape: [16], data_offsets: [0, 64] }, b: { dtype: 'F32', shape: [4], data_offsets: [64, 80] } }, 64),
      /tensor "b": data_offsets \[64, 80\] run past the end of the 64-byte data section/,
    );
  });

  test('malformed offsets', async () => {
    await assertRefused(withHeader({ a: { dtype: 'U8', shape: [4], data_offsets: [8, 4] } }), /data_offsets \[8, 4\] are not two non-negative integers/);
    await assertRefused(withHeader({ a: { dtype: 'U8', shape: [4], data_offsets: [-4, 0] } }), /data_offsets \[-4, 0\]/);
    await assertRefused(withHeader({ a: { dtype: 'U8', shape: [4], data_offsets: ['0', '4'] } }), /data_offsets \[0, 4\] are not/);
    await assertRefused(withHeader({ a: { dtype: 'U8', shape: [4], data_offsets: [0, 1.5] } }), /data_offsets \[0, 1.5\]/);
    await assertRefused(withHeader({ a: { dtype: 'U8', shape: [4], data_offsets: [0] } }), /data_offsets must be an array \[begin, end\]/);
    // 2^60 does not survive as an exact number, so it is no offset at all.
    await assertRefused(writeTemp(encodeRaw('{"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 1152921504606846976]}}')), /data_offsets/);
  });

  test('overlapping offsets', async () => {
    await assertRefused(
      withHeader({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }),
      /tensors "a" \[0, 8\] and "b" \[4, 12\] overlap/,
    );
  });

  test('two tensors on the same bytes overlap; empty tensors anywhere do not', async () => {
    await assertRefused(
      withHeader({ a: { dtype: 'U8', shape: [4], data_offsets: [0, 4] }, b: { dtype: 'I8', shape: [4], data_offsets: [0, 4] } }),
      /tensors "a" \[0, 4\] and "b" \[0, 4\] overlap/,
    );
    const file = withHeader({ a: { dtype: 'U8', shape: [4], data_offsets: [0, 4] }, e: { dtype: 'F32', shape: [0], data_offsets: [2, 2] } });
    await withCheckpoint(file, async (checkpoint) => assert.equal(checkpoint.tensors.length, 2));
  });

  test('offsets whose length disagrees with shape × dtype', async () => {
    await assertRefused(
      withHeader({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 12] } }),
      /tensor "a": data_offsets \[0, 12\] hold 12 bytes, but shape \[2\] of F32 needs 8/,
    );
  });

  test('negative, fractional and non-numeric shapes', async () => {
    await assertRefused(withHeader({ a: { dtype: 'F32', shape: [-1, 2], data_offsets: [0, 8] } }), /tensor "a": invalid dimension -1 in shape \[-1, 2\]/);
    await assertRefused(withHeader({ a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 6] } }), /tensor "a": invalid dimension 1.5/);
    await assertRefused(withHeader({ a: { dtype: 'F32', shape: ['2'], data_offsets: [0, 8] } }), /tensor "a": shape is an array, not an array of numbers/);
    await assertRefused(withHeader({ a: { dtype: 'F32', shape: 2, data_offsets: [0, 8] } }), /tensor "a": shape is a number \(2\), not an array/);
  });

  test('a shape whose element count overflows', async () => {
    await assertRefused(
      withHeader({ a: { dtype: 'F32', shape: [2 ** 30, 2 ** 30, 2 ** 30], data_offsets: [0, 8] } }),
      /tensor "a": shape \[1073741824, 1073741824, 1073741824\] is too large/,
    );
  });

  test('__metadata__ that is not a map of strings', async () => {
    await assertRefused(writeTemp(encodeRaw('{"__metadata__": {"epoch": 3}}')), /__metadata__ must map names to strings, but "epoch" is a number \(3\)/);
    await assertRefused(writeTemp(encodeRaw('{"__metadata__": ["a"]}')), /__metadata__ is an array, not an object/);
  });

  test('a path that cannot be opened', async () => {
    await assertRefused(path.join(temp.dir, 'missing.safetensors'), /cannot open: ENOENT/);
  });
});

describe('sharded safetensors', () => {
  const shardA = [spec('embed.weight', 'F32', [2, 2], float32(1, 2, 3, 4)), spec('layer.0.weight', 'F16', [2], uint16Codes(0x3c00, 0xc000))];
  const shardB = [spec('layer.1.weight', 'BF16', [3], uint16Codes(0x3f80, 0x4000, 0x4040)), spec('head.bias', 'I64', [1], int64(-5n))];

  /** Writes the shards into a fresh folder with an index; returns the index path. */
  function writeShardedModel(
    index: unknown,
    shards: Record<string, readonly TensorSpec[]> = { 'model-00001-of-00002.safetensors': shardA, 'model-00002-of-00002.safetensors': shardB },
  ): string {
    const folder = makeTempDirIn(temp.dir);
    for (const [name, tensors] of Object.entries(shards)) writeFileSync(path.join(folder, name), encodeSafetensors(tensors, { format: 'pt' }));
    const indexPath = path.join(folder, 'model.safetensors.index.json');
    writeFileSync(indexPath, typeof index === 'string' ? index : JSON.stringify(index));
    return indexPath;
  }

  const weightMap = (): Record<string, string> => ({
    'embed.weight': 'model-00001-of-00002.safetensors',
    'layer.0.weight': 'model-00001-of-00002.safetensors',
    'layer.1.weight': 'model-00002-of-00002.safetensors',
    'head.bias': 'model-00002-of-00002.safetensors',
  });

  test('an index joins its shards into one checkpoint', async () => {
    const indexPath = writeShardedModel({ metadata: { total_size: 36 }, weight_map: weightMap() });
    assert.ok(safetensorsReader.sniff(indexPath, Buffer.alloc(0)));
    await withCheckpoint(indexPath, async (checkpoint) => {
      assert.equal(checkpoint.path, indexPath);
      assert.equal(checkpoint.format, 'safetensors');
      assert.deepEqual(checkpoint.metadata, { total_size: 36, format: 'pt' });
      assert.deepEqual(checkpoint.warnings, []);
      assert.deepEqual(
        checkpoint.tensors.map((tensor) => tensor.name),
        ['embed.weight', 'layer.0.weight', 'layer.1.weight', 'head.bias'],
      );
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'embed.weight').read()), [1, 2, 3, 4]);
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'layer.0.weight').read()), [1, -2]);
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'layer.1.weight').read()), [1, 2, 3]);
      assert.deepEqual(Array.from(await tensorNamed(checkpoint, 'head.bias').read()), [-5]);
    });
  });

  test('a shard tensor missing from the weight_map is listed with a warning', async () => {
    const map = weightMap();
    delete map['head.bias'];
    await withCheckpoint(writeShardedModel({ weight_map: map }), async (checkpoint) => {
      assert.equal(checkpoint.tensors.length, 4);
      assert.deepEqual(checkpoint.warnings, ['model-00002-of-00002.safetensors: tensor "head.bias" is not in the weight_map; it is listed anyway']);
    });
  });

  test('missing shard', async () => {
    const map = { ...weightMap(), extra: 'model-00003-of-00003.safetensors' };
    const indexPath = writeShardedModel({ weight_map: map });
    await assertRefused(indexPath, /shard "model-00003-of-00003.safetensors" named in the weight_map cannot be opened \(cannot open: ENOENT\)/, indexPath);
  });

  test('tensor mapped to a shard that does not contain it', async () => {
    const indexPath = writeShardedModel({ weight_map: { ...weightMap(), 'head.bias': 'model-00001-of-00002.safetensors' } });
    await assertRefused(
      indexPath,
      /weight_map puts tensor "head.bias" in shard "model-00001-of-00002.safetensors", but it is stored in "model-00002-of-00002.safetensors"/,
      indexPath,
    );
    const ghost = writeShardedModel({ weight_map: { ...weightMap(), ghost: 'model-00001-of-00002.safetensors' } });
    await assertRefused(ghost, /weight_map puts tensor "ghost" in shard "model-00001-of-00002.safetensors", which does not contain it/, ghost);
  });

  test('tensor present in two shards', async () => {
    const indexPath = writeShardedModel(
      { weight_map: weightMap() },
      { 'model-00001-of-00002.safetensors': shardA, 'model-00002-of-00002.safetensors': [...shardB, shardA[0]!] },
    );
    await assertRefused(
      indexPath,
      /tensor "embed.weight" is stored in two shards, "model-00001-of-00002.safetensors" and "model-00002-of-00002.safetensors"/,
      indexPath,
    );
  });

  test('a damaged shard is reported against the shard file', async () => {
    const indexPath = writeShardedModel({ weight_map: weightMap() });
    const shardPath = path.join(path.dirname(indexPath), 'model-00002-of-00002.safetensors');
    writeFileSync(shardPath, encodeRaw('not json'));
    await assertRefused(indexPath, /header is not valid JSON/, shardPath);
  });

  test('shard names may not leave the index folder', async () => {
    for (const shard of ['../elsewhere.safetensors', '/etc/passwd', '.']) {
      const indexPath = writeShardedModel({ weight_map: { 'embed.weight': shard } });
      await assertRefused(indexPath, /is not a file inside the index's folder/, indexPath);
    }
  });

  test('malformed indexes', async () => {
    const cases: [unknown, RegExp][] = [
      ['{"weight_map": ', /shard index is not valid JSON/],
      ['[]', /shard index is an array, not a JSON object/],
      [{ metadata: {} }, /"weight_map" is missing, not an object/],
      [{ weight_map: { a: 3 } }, /"weight_map" maps tensor "a" to a number \(3\), not a shard file name/],
      [{ weight_map: {}, metadata: 'x' }, /"metadata" is a string \("x"\), not an object/],
      ['', /the file is empty/],
    ];
    for (const [index, problem] of cases) {
      const indexPath = writeShardedModel(index);
      await assertRefused(indexPath, problem, indexPath);
    }
  });
});

/** A fresh sub-folder, so that each sharded model has its own index and shards. */
let folderCounter = 0;
function makeTempDirIn(parent: string): string {
  const folder = path.join(parent, `model${++folderCounter}`);
  mkdirSync(folder);
  return folder;
}

// ---------------------------------------------------------------------------------------

describe('large sparse safetensors file', () => {
  const GB = 1024 * MB;
  /** Over 2 GB of data, all holes (no disk used) but for the first and last value of each tensor. */
  const layout: { name: string; dtype: string; shape: number[]; width: number; first: Buffer; last: Buffer; firstValue: number; lastValue: number }[] = [
    { name: 'huge.a', dtype: 'F32', shape: [16384, 16384], width: 4, first: float32(1.5), last: float32(-2.5), firstValue: 1.5, lastValue: -2.5 },
    { name: 'huge.b', dtype: 'BF16', shape: [32768, 16384], width: 2, first: uint16Codes(0x4049), last: uint16Codes(0xc040), firstValue: 3.140625, lastValue: -3 },
    { name: 'medium', dtype: 'F32', shape: [4096, 4096], width: 4, first: float32(7), last: float32(9), firstValue: 7, lastValue: 9 },
  ];
  let file: string;

  before(() => {
    const tensors = layout.map((entry) => ({ ...entry, byteLength: entry.shape.reduce((a, b) => a * b, 1) * entry.width }));
    const header: Record<string, unknown> = {};
    let offset = 0;
    for (const tensor of tensors) {
      header[tensor.name] = { dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, offset + tensor.byteLength] };
      offset += tensor.byteLength;
    }
    const prefix = encodeRaw(JSON.stringify(header));
    file = path.join(temp.dir, 'sparse.safetensors');
    const handle = openSync(file, 'w');
    try {
      writeSync(handle, prefix, 0, prefix.length, 0);
      ftruncateSync(handle, prefix.length + offset);
      let at = prefix.length;
      for (const tensor of tensors) {
        writeSync(handle, tensor.first, 0, tensor.first.length, at);
        writeSync(handle, tensor.last, 0, tensor.last.length, at + tensor.byteLength - tensor.last.length);
        at += tensor.byteLength;
      }
    } finally {
      closeSync(handle);
    }
    assert.ok(offset > 2 * GB, 'the data section is over 2 GB');
  });

  test('is listed and its first and last values read without memory growing with the file', async () => {
    const rssBefore = process.memoryUsage().rss;
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(
        checkpoint.tensors.map((tensor) => [tensor.name, tensor.dtype, tensor.shape]),
        layout.map((entry) => [entry.name, entry.dtype, entry.shape]),
      );
      for (const entry of layout) {
        const tensor = tensorNamed(checkpoint, entry.name);
        assert.deepEqual(Array.from(await tensor.read(0, 2)), [entry.firstValue, 0]);
        assert.deepEqual(Array.from(await tensor.read(tensor.elementCount - 2, 2)), [0, entry.lastValue]);
      }
    });
    const growth = process.memoryUsage().rss - rssBefore;
    assert.ok(growth < 200 * MB, `RSS grew by ${(growth / MB).toFixed(1)} MB`);
  });

  test('chunks() streams a large tensor in bounded chunks', async () => {
    const chunkElements = 1 << 20;
    await withCheckpoint(file, async (checkpoint) => {
      const medium = tensorNamed(checkpoint, 'medium');
      const rssBefore = process.memoryUsage().rss;
      let seen = 0;
      let sum = 0;
      let chunkCount = 0;
      for await (const chunk of medium.chunks({ chunkElements })) {
        assert.ok(chunk.length <= chunkElements);
        chunkCount++;
        seen += chunk.length;
        for (const value of chunk) sum += value;
      }
      assert.equal(seen, medium.elementCount);
      assert.equal(chunkCount, medium.elementCount / chunkElements);
      assert.equal(sum, 16);
      const growth = process.memoryUsage().rss - rssBefore;
      assert.ok(growth < 200 * MB, `RSS grew by ${(growth / MB).toFixed(1)} MB while streaming`);
    });
  });

  test('chunks() stops with CancelledError when its signal aborts', async () => {
    await withCheckpoint(file, async (checkpoint) => {
      const huge = tensorNamed(checkpoint, 'huge.a');
      const controller = new AbortController();
      let chunkCount = 0;
      await assert.rejects(async () => {
        for await (const chunk of huge.chunks({ chunkElements: 1 << 20, signal: controller.signal })) {
          assert.equal(chunk.length, 1 << 20);
          if (++chunkCount === 3) controller.abort();
        }
      }, CancelledError);
      assert.equal(chunkCount, 3);
    });
  });

  test('a read larger than the single-read limit is refused rather than attempted', async () => {
    await withCheckpoint(file, async (checkpoint) => {
      await assert.rejects(tensorNamed(checkpoint, 'huge.a').read(), /refusing a single read/);
    });
  });
});
