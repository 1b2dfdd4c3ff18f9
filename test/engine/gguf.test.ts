import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CheckpointError } from '../../server/src/engine/errors';
import type { Checkpoint } from '../../server/src/engine/formats/checkpoint';
import { ggufReader } from '../../server/src/engine/formats/gguf';
import type { Tensor } from '../../server/src/engine/formats/tensor';
import { fixturePath, makeTempDir } from '../helpers';
import { tensorNamed, usingCheckpoint } from './checkpointTesting';
import {
  GGML_TYPE,
  GGUF_TYPE_CODE,
  array,
  blockSteps,
  bool,
  encodeEntry,
  encodeGguf,
  f32,
  f64,
  ggufString,
  halfBits,
  halfValue,
  i16,
  i32,
  i64,
  i8,
  preamble,
  quantize,
  str,
  u16,
  u32,
  u64,
  u8,
  uint32LE,
  uint64LE,
  type GgufTensorSpec,
  type GgufTypeName,
  type GgufValue,
  type QuantScheme,
} from './ggufWriter';
import { seededRandom } from './random';
import { float32, float64, int16, int32, int64, int8, uint16Codes } from './safetensorsWriter';

let temp: { dir: string; cleanup: () => void };
before(() => {
  temp = makeTempDir('gguf-test-');
});
after(() => temp.cleanup());

let fileCounter = 0;
function writeTemp(contents: Buffer): string {
  const file = path.join(temp.dir, `model${++fileCounter}.gguf`);
  writeFileSync(file, contents);
  return file;
}

function withCheckpoint<T>(file: string, use: (checkpoint: Checkpoint) => Promise<T>): Promise<T> {
  return usingCheckpoint(ggufReader.open(file), use);
}

/** Opening `contents` fails with a CheckpointError that names the file and matches `problem`. */
async function assertRefused(contents: Buffer, problem: RegExp): Promise<void> {
  const file = writeTemp(contents);
  await assert.rejects(ggufReader.open(file), (error: unknown) => {
    assert.ok(error instanceof CheckpointError, `expected a CheckpointError, got ${String(error)}`);
    assert.equal(error.file, file);
    assert.ok(error.message.startsWith(`${file}: `), `message names the file: ${error.message}`);
    assert.match(error.problem, problem);
    return true;
  });
}

function tensor(name: string, type: number, dims: readonly (number | bigint)[], data: Buffer, declaredOffset?: bigint): GgufTensorSpec {
  return { name, type, dims, data, declaredOffset };
}

async function readAll(t: Tensor): Promise<number[]> {
  return Array.from(await t.read());
}

// ---------------------------------------------------------------------------------------

describe('GGUF metadata', () => {
  test('every value type is read, 64-bit integers exactly, base-model keys included', async () => {
    const metadata: [string, GgufValue][] = [
      ['general.architecture', str('llama')],
      ['general.name', str('Tiny Llama Fine-tune')],
      ['general.base_model.count', u32(1)],
      ['general.base_model.0.name', str('Llama 3.1 8B')],
      ['general.base_model.0.organization', str('Meta Llama')],
      ['general.base_model.0.repo_url', str('https://huggingface.co/meta-llama/Llama-3.1-8B')],
      ['general.quantization_version', u32(2)],
      ['general.file_type', u32(15)],
      ['test.u8', u8(255)],
      ['test.i8', i8(-128)],
      ['test.u16', u16(65535)],
      ['test.i16', i16(-32768)],
      ['test.u32', u32(4294967295)],
      ['test.i32', i32(-2147483648)],
      ['test.f32', f32(0.1)],
      ['test.f64', f64(1e-300)],
      ['test.true', bool(true)],
      ['test.false', bool(false)],
      ['test.utf8', str('héllo ✓')],
      ['test.empty', str('')],
      ['test.u64.small', u64(42n)],
      // 2^53 + 1 would round as a number, so it is kept as its decimal digits.
      ['test.u64.large', u64(2n ** 53n + 1n)],
      ['test.i64.small', i64(-5n)],
      ['test.i64.min', i64(-(2n ** 63n))],
      ['test.u32s', array('uint32', [u32(1), u32(2), u32(3)])],
      ['test.strings', array('string', [str('a'), str('bc')])],
      ['test.nested', array('array', [array('int16', [i16(-1), i16(2)]), array('int16', []), array('string', [str('x')])])],
      ['test.empty_array', array('float32', [])],
      ['__proto__', str('plain data')],
    ];
    const file = writeTemp(encodeGguf({ metadata }));
    await withCheckpoint(file, async (checkpoint) => {
      assert.equal(checkpoint.format, 'gguf');
      assert.deepEqual(checkpoint.tensors, []);
      assert.deepEqual(checkpoint.warnings, []);
      assert.deepEqual(checkpoint.metadata, {
        'general.architecture': 'llama',
        'general.name': 'Tiny Llama Fine-tune',
        'general.base_model.count': 1,
        'general.base_model.0.name': 'Llama 3.1 8B',
        'general.base_model.0.organization': 'Meta Llama',
        'general.base_model.0.repo_url': 'https://huggingface.co/meta-llama/Llama-3.1-8B',
        'general.quantization_version': 2,
        'general.file_type': 15,
        'test.u8': 255,
        'test.i8': -128,
        'test.u16': 65535,
        'test.i16': -32768,
        'test.u32': 4294967295,
        'test.i32': -2147483648,
        'test.f32': Math.fround(0.1),
        'test.f64': 1e-300,
        'test.true': true,
        'test.false': false,
        'test.utf8': 'héllo ✓',
        'test.empty': '',
        'test.u64.small': 42,
        'test.u64.large': '9007199254740993',
        'test.i64.small': -5,
        'test.i64.min': '-9223372036854775808',
        'test.u32s': [1, 2, 3],
        'test.strings': ['a', 'bc'],
        'test.nested': [[-1, 2], [], ['x']],
        'test.empty_array': [],
        ['__proto__']: 'plain data',
      });
      assert.ok(Object.hasOwn(checkpoint.metadata, '__proto__'), 'a "__proto__" key is an own data property');
      // Metadata is cached as JSON with fingerprints: it must survive a round trip.
      assert.deepEqual(JSON.parse(JSON.stringify(checkpoint.metadata)), checkpoint.metadata);
    });
  });

  test('a 150 000-token vocabulary is summarised, not kept, and the entries after it are still read', async () => {
    const tokenCount = 150_000;
    const tokens = array('string', Array.from({ length: tokenCount }, (_, i) => str(`tok${i}`)));
    const tokenTypes = array('int32', Array.from({ length: tokenCount }, () => i32(1)));
    const file = writeTemp(
      encodeGguf({
        metadata: [
          ['tokenizer.ggml.model', str('gpt2')],
          ['tokenizer.ggml.tokens', tokens],
          ['tokenizer.ggml.token_type', tokenTypes],
          ['tokenizer.ggml.bos_token_id', u32(7)],
        ],
        tensors: [tensor('w', GGML_TYPE.F32, [2], float32(1.5, -2))],
      }),
    );
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(checkpoint.metadata, {
        'tokenizer.ggml.model': 'gpt2',
        'tokenizer.ggml.tokens': { arrayOf: 'string', length: tokenCount },
        'tokenizer.ggml.token_type': { arrayOf: 'int32', length: tokenCount },
        'tokenizer.ggml.bos_token_id': 7,
      });
      assert.deepEqual(await readAll(tensorNamed(checkpoint, 'w')), [1.5, -2]);
    });
  });

  test('the values kept per entry are bounded across nested arrays; the rest are summarised', async () => {
    const bytes = (count: number) => array('uint8', Array.from({ length: count }, (_, i) => u8(i % 256)));
    // The outer array takes 3 of the 1024 values kept; the first inner array fits in the
    // 1021 left, the other two (600 each) no longer do.
    const file = writeTemp(encodeGguf({ metadata: [['nested', array('array', [bytes(600), bytes(600), bytes(600)])]] }));
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(checkpoint.metadata['nested'], [
        Array.from({ length: 600 }, (_, i) => i % 256),
        { arrayOf: 'uint8', length: 600 },
        { arrayOf: 'uint8', length: 600 },
      ]);
    });
  });

  test('a string longer than 1 MiB is summarised by its length', async () => {
    const long = 'x'.repeat(1024 * 1024 + 1);
    const file = writeTemp(encodeGguf({ metadata: [['long', str(long)], ['after', str('ok')]] }));
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(checkpoint.metadata, { long: { stringBytes: long.length }, after: 'ok' });
    });
  });

  test('sniffs by the .gguf extension or the magic, whatever the name', () => {
    const head = preamble(3, 0, 0);
    assert.equal(ggufReader.sniff('/m/model.GGUF', Buffer.alloc(0)), true);
    assert.equal(ggufReader.sniff('/m/ggml-model-q4_0.bin', head), true);
    assert.equal(ggufReader.sniff('/m/pytorch_model.bin', Buffer.from('PK\x03\x04', 'latin1')), false);
  });
});

describe('GGUF plain tensors', () => {
  test('every plain ggml type decodes exactly; shapes are GGUF dims reversed, as PyTorch lists them', async () => {
    const plain = (spec: GgufTensorSpec, dtype: string, shape: number[], values: number[]) => ({ spec, dtype, shape, values });
    const counting = Array.from({ length: 24 }, (_, i) => i);
    const cases = [
      // ne0 = 3 values per row, 2 rows: PyTorch shape [2, 3], stored row after row.
      plain(tensor('f32', GGML_TYPE.F32, [3, 2], float32(1, 2, 3, -4, 0.5, 2 ** -149)), 'F32', [2, 3], [1, 2, 3, -4, 0.5, 2 ** -149]),
      plain(tensor('f16', GGML_TYPE.F16, [4], uint16Codes(0x3c00, 0xc000, 0x0001, 0x7c00)), 'F16', [4], [1, -2, 2 ** -24, Infinity]),
      plain(tensor('bf16', GGML_TYPE.BF16, [3], uint16Codes(0x3f80, 0xc040, 0x4049)), 'BF16', [3], [1, -3, 3.140625]),
      plain(tensor('f64', GGML_TYPE.F64, [2], float64(0.1, -1e300)), 'F64', [2], [0.1, -1e300]),
      plain(tensor('i8', GGML_TYPE.I8, [3], int8(-128, 127, -1)), 'I8', [3], [-128, 127, -1]),
      plain(tensor('i16', GGML_TYPE.I16, [2], int16(-32768, 32767)), 'I16', [2], [-32768, 32767]),
      plain(tensor('i32', GGML_TYPE.I32, [2, 1, 1], int32(-7, 2 ** 31 - 1)), 'I32', [1, 1, 2], [-7, 2 ** 31 - 1]),
      plain(tensor('i64', GGML_TYPE.I64, [2], int64(-(2n ** 40n), 5n)), 'I64', [2], [-(2 ** 40), 5]),
      plain(tensor('cube', GGML_TYPE.F32, [2, 3, 4], float32(...counting)), 'F32', [4, 3, 2], counting),
    ];
    const file = writeTemp(encodeGguf({ tensors: cases.map((c) => c.spec) }));
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(checkpoint.warnings, []);
      assert.deepEqual(checkpoint.tensors.map((t) => t.name), cases.map((c) => c.spec.name));
      for (const { spec, dtype, shape, values } of cases) {
        const t = tensorNamed(checkpoint, spec.name);
        assert.equal(t.dtype, dtype, spec.name);
        assert.deepEqual(t.shape, shape, spec.name);
        assert.equal(t.byteSize, spec.data.length, spec.name);
        assert.equal(t.quantization, undefined);
        assert.deepStrictEqual(await readAll(t), values, spec.name);
      }
    });
  });

  test('general.alignment places the data section and every tensor on its multiple', async () => {
    const tensors = [tensor('a', GGML_TYPE.F32, [3], float32(1, 2, 3)), tensor('b', GGML_TYPE.F32, [1], float32(9))];
    const contents = encodeGguf({ metadata: [['general.alignment', u32(64)]], tensors });
    // Tensor b sits 64 bytes after a, past a's 12 bytes and 52 bytes of padding.
    assert.equal(contents.length % 64, 4);
    const file = writeTemp(contents);
    await withCheckpoint(file, async (checkpoint) => {
      assert.equal(checkpoint.metadata['general.alignment'], 64);
      assert.deepEqual(await readAll(tensorNamed(checkpoint, 'a')), [1, 2, 3]);
      assert.deepEqual(await readAll(tensorNamed(checkpoint, 'b')), [9]);
    });
  });

  test('IQ types and unknown type ids are left out with a warning; the other tensors are listed', async () => {
    const file = writeTemp(
      encodeGguf({
        tensors: [
          tensor('iq', GGML_TYPE.IQ2_XXS, [256], Buffer.alloc(66)),
          tensor('future', 99, [8], Buffer.alloc(8)),
          tensor('kept', GGML_TYPE.F32, [1], float32(3)),
        ],
      }),
    );
    await withCheckpoint(file, async (checkpoint) => {
      assert.deepEqual(checkpoint.tensors.map((t) => t.name), ['kept']);
      assert.equal(checkpoint.warnings.length, 2);
      assert.match(checkpoint.warnings[0]!, /"iq" has ggml type IQ2_XXS, which this tool does not dequantize; it is left out/);
      assert.match(checkpoint.warnings[1]!, /"future" has unknown ggml type 99; it is left out/);
    });
  });
});

// ---------------------------------------------------------------------------------------
// Hand-built blocks: bytes chosen by hand, expected values derived on paper from the block
// layouts of ggml-common.h and the dequantization of ggml-quants.c.

/** fp16 codes of exactly representable scales. */
const HALF = { quarter: 0x3400, half: 0x3800, one: 0x3c00, two: 0x4000, minusOne: 0xbc00 } as const;

/**
 * The expected values of one block: every value of sub-block j (of `subBlock` values) is
 * `base[j]` (`rest` where not given), except the positions listed in `exceptions`.
 */
function expectedBlock(count: number, subBlock: number, base: Record<number, number>, exceptions: Record<number, number>, rest = 0): number[] {
  const values = Array.from({ length: count }, (_, i) => base[Math.floor(i / subBlock)] ?? rest);
  for (const [index, value] of Object.entries(exceptions)) values[Number(index)] = value;
  return values;
}

async function readBlock(type: number, elements: number, block: Buffer): Promise<{ values: number[]; tensor: Tensor }> {
  const file = writeTemp(encodeGguf({ tensors: [tensor('block', type, [elements], block)] }));
  return withCheckpoint(file, async (checkpoint) => {
    const t = tensorNamed(checkpoint, 'block');
    return { values: await readAll(t), tensor: t };
  });
}

describe('ggml blocks built by hand', () => {
  test('Q8_0: fp16 d, then 32 signed codes; x = q·d', async () => {
    const block = Buffer.alloc(34);
    block.writeUInt16LE(HALF.half, 0); // d = 0.5
    block.writeInt8(1, 2); //     x0 = 1·0.5 = 0.5
    block.writeInt8(-1, 3); //    x1 = −0.5
    block.writeInt8(127, 4); //   x2 = 63.5
    block.writeInt8(-128, 5); //  x3 = −64
    block.writeInt8(5, 33); //    x31 = 2.5
    const { values, tensor: t } = await readBlock(GGML_TYPE.Q8_0, 32, block);
    assert.deepEqual(values, expectedBlock(32, 32, {}, { 0: 0.5, 1: -0.5, 2: 63.5, 3: -64, 31: 2.5 }));
    assert.deepEqual(t.quantization, { scheme: 'Q8_0', bitsPerValue: 8.5 });
    assert.equal(t.dtype, 'F32');
    assert.equal(t.byteSize, 34);
  });

  test('Q4_0: fp16 d, 16 bytes; byte j holds x_j (low nibble) and x_j+16 (high); x = (q − 8)·d', async () => {
    const block = Buffer.alloc(18, 0x88); // every code 8: x = 0
    block.writeUInt16LE(HALF.two, 0); // d = 2
    block[2] = 0x9f; // x0: (15 − 8)·2 = 14;  x16: (9 − 8)·2 = 2
    block[3] = 0x08; // x1: (8 − 8)·2 = 0;    x17: (0 − 8)·2 = −16
    const { values, tensor: t } = await readBlock(GGML_TYPE.Q4_0, 32, block);
    assert.deepEqual(values, expectedBlock(32, 32, {}, { 0: 14, 16: 2, 1: 0, 17: -16 }));
    assert.deepEqual(t.quantization, { scheme: 'Q4_0', bitsPerValue: 4.5 });
  });

  test('Q4_1: fp16 d and m, 16 bytes of nibbles; x = q·d + m', async () => {
    const block = Buffer.alloc(20); // every code 0: x = m = −1
    block.writeUInt16LE(HALF.half, 0); //     d = 0.5
    block.writeUInt16LE(HALF.minusOne, 2); // m = −1
    block[4] = 0x3f; //  x0: 15·0.5 − 1 = 6.5;   x16: 3·0.5 − 1 = 0.5
    block[19] = 0xa1; // x15: 1·0.5 − 1 = −0.5;  x31: 10·0.5 − 1 = 4
    const { values } = await readBlock(GGML_TYPE.Q4_1, 32, block);
    assert.deepEqual(values, expectedBlock(32, 32, { 0: -1 }, { 0: 6.5, 16: 0.5, 15: -0.5, 31: 4 }));
  });

  test('Q5_0: fp16 d, 32-bit mask of fifth bits (bit i for x_i), nibbles; x = (q − 16)·d', async () => {
    const block = Buffer.alloc(22); // every code 0: x = −16
    block.writeUInt16LE(HALF.one, 0); // d = 1
    // Fifth bits of x0, x17 and x31: mask 1 + 2^17 + 2^31 = 0x80020001.
    block.writeUInt32LE(0x80020001, 2);
    block[6] = 0x21; //  x0: (1 | 16) − 16 = 1;   x16: 2 − 16 = −14
    block[7] = 0x3f; //  x1: 15 − 16 = −1;        x17: (3 | 16) − 16 = 3
    block[21] = 0xf0; // x15: 0 − 16 = −16;       x31: (15 | 16) − 16 = 15
    const { values } = await readBlock(GGML_TYPE.Q5_0, 32, block);
    assert.deepEqual(values, expectedBlock(32, 32, { 0: -16 }, { 0: 1, 16: -14, 1: -1, 17: 3, 15: -16, 31: 15 }));
  });

  test('Q5_1: fp16 d and m, fifth bits, nibbles; x = q·d + m', async () => {
    const block = Buffer.alloc(24); // every code 0: x = m = 1
    block.writeUInt16LE(HALF.quarter, 0); // d = 0.25
    block.writeUInt16LE(HALF.one, 2); //     m = 1
    block.writeUInt32LE((1 << 2) | (1 << 20), 4); // fifth bits of x2 and x20
    block[10] = 0x51; // x2: (1 | 16)·0.25 + 1 = 5.25;  x18: 5·0.25 + 1 = 2.25
    block[12] = 0x0f; // x4: 15·0.25 + 1 = 4.75;        x20: (0 | 16)·0.25 + 1 = 5
    const { values } = await readBlock(GGML_TYPE.Q5_1, 32, block);
    assert.deepEqual(values, expectedBlock(32, 32, { 0: 1 }, { 2: 5.25, 18: 2.25, 4: 4.75, 20: 5 }));
  });

  test('Q2_K: 4-bit sub-scales and sub-mins, 2-bit codes in bit pairs, fp16 d and dmin', async () => {
    // scales[16] at 0, qs[64] at 16, d at 80, dmin at 82. x = d·(sc & 15)·q − dmin·(sc >> 4).
    const block = Buffer.alloc(84);
    block.writeUInt16LE(HALF.one, 80); //  d = 1
    block.writeUInt16LE(HALF.half, 82); // dmin = 0.5
    block[0] = 0x21; // sub-block 0 (x0..x15):    scale 1, min 2·0.5 = 1   → x = q − 1
    block[2] = 0x03; // sub-block 2 (x32..x47):   scale 3, min 0           → x = 3q
    block[4] = 0x12; // sub-block 4 (x64..x79):   scale 2, min 0.5         → x = 2q − 0.5
    block[6] = 0xf1; // sub-block 6 (x96..x111):  scale 1, min 15·0.5 = 7.5 → x = q − 7.5
    block[9] = 0x42; // sub-block 9 (x144..x159): scale 2, min 2           → x = 2q − 2
    // qs[0] holds x0, x32, x64, x96 in bit pairs 0–1, 2–3, 4–5, 6–7: codes 0, 1, 2, 3
    // → x0 = −1, x32 = 3, x64 = 3.5, x96 = −4.5.
    block[16 + 0] = 0xe4;
    // x149 is in the second half (128..255), 21 values in: qs byte 32 + 21, bit pair 0–1. Code 3 → 2·3 − 2 = 4.
    block[16 + 53] = 0x03;
    const { values, tensor: t } = await readBlock(GGML_TYPE.Q2_K, 256, block);
    assert.deepEqual(values, expectedBlock(256, 16, { 0: -1, 2: 0, 4: -0.5, 6: -7.5, 9: -2 }, { 0: -1, 32: 3, 64: 3.5, 96: -4.5, 149: 4 }));
    assert.deepEqual(t.quantization, { scheme: 'Q2_K', bitsPerValue: 2.625 });
  });

  test('Q3_K: high-bit mask, 2-bit low codes, 6-bit signed sub-scales, fp16 d', async () => {
    // hmask[32] at 0, qs[64] at 32, scales[12] at 96, d at 108. x = d·(S − 32)·(low − (high ? 0 : 4)).
    const block = Buffer.alloc(110);
    block.writeUInt16LE(HALF.half, 108); // d = 0.5
    // Six-bit S per sub-block: low nibble in byte j % 8 (low for j < 8, high for j ≥ 8), top
    // two bits in byte 8 + j % 4 at bit 2⌊j/4⌋. Wanted: S0 = 33, S5 = 30, S10 = 40, all others 32.
    // Low nibbles: S0 → 1 in byte 0; S5 → 14 in byte 5; S10 → 8 in byte 2's high nibble.
    block[96 + 0] = 0x01;
    block[96 + 5] = 0x0e;
    block[96 + 2] = 0x80;
    // Top bits are 2 (binary 10) for every S except S5 (30 >> 4 = 1), which sits in byte 9 at bits 2–3.
    block[96 + 8] = 0xaa;
    block[96 + 9] = 0xa6;
    block[96 + 10] = 0xaa;
    block[96 + 11] = 0xaa;
    // With every low code and high bit 0, q = −4: sub-block 0: 0.5·1·(−4) = −2; sub-block 5:
    // 0.5·(−2)·(−4) = 4; sub-block 10: 0.5·8·(−4) = −16; the others have scale 0, and
    // 0·(−4) is −0 in IEEE arithmetic, in ggml as here.
    // x3: qs[3] bits 0–1 = 3, hmask[3] bit 0 set → q = 3 → 0.5·1·3 = 1.5.
    block[32 + 3] = 0x03;
    block[3] = 0x01;
    // x80 = 64 + 16: first half, bit pair 2 (4–5) of qs[16]; high bit is hmask[16] bit 2, left 0.
    // low = 1 → q = −3 → 0.5·(−2)·(−3) = 3.
    block[32 + 16] = 0x10;
    // x170 = 128 + 32 + 10: second half, bit pair 1 (2–3) of qs[32 + 10]; high bit is hmask[10]
    // bit ⌊170/32⌋ = 5. low = 2, high set → q = 2 → 0.5·8·2 = 8.
    block[32 + 42] = 0x08;
    block[10] = 0x20;
    const { values } = await readBlock(GGML_TYPE.Q3_K, 256, block);
    assert.deepEqual(values, expectedBlock(256, 16, { 0: -2, 5: 4, 10: -16 }, { 3: 1.5, 80: 3, 170: 8 }, -0));
  });

  test('Q4_K: fp16 d and dmin, 6-bit scales and mins packed in 12 bytes, paired nibbles', async () => {
    // d at 0, dmin at 2, scales[12] at 4, qs[128] at 16. x = d·sc·q − dmin·m.
    const block = Buffer.alloc(144);
    block.writeUInt16LE(HALF.one, 0); //     d = 1
    block.writeUInt16LE(HALF.quarter, 2); // dmin = 0.25
    // Wanted: sub-block 0: sc 1, m 4; sub-block 1: sc 2, m 0; sub-block 5: sc 33, m 17.
    // Sub-blocks 0–3 keep sc in byte j and m in byte j + 4 (low six bits); sub-blocks 4–7 keep
    // the low nibbles of sc and m in byte j + 4, the top two bits of sc in byte j − 4 and of m
    // in byte j (bits 6–7). 33 = 0b10_0001, 17 = 0b01_0001.
    block[4 + 0] = 0x01; //                sc0 = 1
    block[4 + 1] = 0x02 | (2 << 6); //     sc1 = 2, top bits of sc5 = 2
    block[4 + 4] = 0x04; //                m0 = 4
    block[4 + 5] = 1 << 6; //              m1 = 0, top bits of m5 = 1
    block[4 + 9] = 0x01 | (0x01 << 4); //  low nibbles of sc5 and m5
    // Base values (q = 0): sub-block 0: −0.25·4 = −1; sub-block 1: 0; sub-block 5: −0.25·17 = −4.25.
    // qs[0]: x0 in the low nibble (sub-block 0), x32 in the high (sub-block 1): 15 − 1 = 14 and 2·3 = 6.
    block[16 + 0] = 0x3f;
    // qs[31]: x31 = 0 − 1 = −1; x63 = 2·10 = 20.
    block[16 + 31] = 0xa0;
    // x161 = 128 + 32 + 1: high nibble of qs[64 + 1]; 33·2 − 4.25 = 61.75.
    block[16 + 65] = 0x20;
    const { values, tensor: t } = await readBlock(GGML_TYPE.Q4_K, 256, block);
    assert.deepEqual(values, expectedBlock(256, 32, { 0: -1, 1: 0, 5: -4.25 }, { 0: 14, 32: 6, 31: -1, 63: 20, 161: 61.75 }));
    assert.deepEqual(t.quantization, { scheme: 'Q4_K', bitsPerValue: 4.5 });
  });

  test('Q5_K: as Q4_K with a fifth bit per value in qh', async () => {
    // d at 0, dmin at 2, scales[12] at 4, qh[32] at 16, qs[128] at 48.
    const block = Buffer.alloc(176);
    block.writeUInt16LE(HALF.half, 0); // d = 0.5
    block.writeUInt16LE(HALF.one, 2); //  dmin = 1
    // Sub-block 0: sc 2, m 3 → x = q − 3. Sub-block 3: sc 1, m 0 → x = 0.5q.
    // Sub-block 6: sc 4, m 10 (both below 16: only byte 6 + 4 = 10 is needed) → x = 2q − 10.
    block[4 + 0] = 2;
    block[4 + 3] = 1;
    block[4 + 4] = 3;
    block[4 + 10] = 0x04 | (0x0a << 4);
    // x5: low nibble of qs[5] = 7, fifth bit = qh[5] bit 0 → q = 23 → 20.
    block[48 + 5] = 0x07;
    block[16 + 5] = 0x01;
    // x100 = 64 + 32 + 4: high nibble of qs[32 + 4] = 15, fifth bit = qh[4] bit 3 → q = 31 → 15.5.
    block[48 + 36] = 0xf0;
    block[16 + 4] = 0x08;
    // x200 = 192 + 8: low nibble of qs[96 + 8] = 3, qh[8] bit 6 clear → q = 3 → −4.
    block[48 + 104] = 0x03;
    const { values } = await readBlock(GGML_TYPE.Q5_K, 256, block);
    assert.deepEqual(values, expectedBlock(256, 32, { 0: -3, 3: 0, 6: -10 }, { 5: 20, 100: 15.5, 200: -4 }));
  });

  test('Q6_K: 4-bit low codes, 2-bit high codes, signed 8-bit sub-scales, fp16 d; x = d·sc·(q − 32)', async () => {
    // ql[128] at 0, qh[64] at 128, scales[16] at 192, d at 208.
    const block = Buffer.alloc(210);
    block.writeUInt16LE(HALF.quarter, 208); // d = 0.25
    block.writeInt8(4, 192 + 0);
    block.writeInt8(-2, 192 + 2);
    block.writeInt8(1, 192 + 9);
    block.writeInt8(-128, 192 + 15);
    // Codes all 0 → q − 32 = −32: sub-block 0: 0.25·4·(−32) = −32; sub-block 2: 16; sub-block 9: −8;
    // sub-block 15: 0.25·(−128)·(−32) = 1024; the others 0·(−32) = −0.
    // x1 (group 0 of the first half): low nibble of ql[1], bits 0–1 of qh[1]. q = 15 | 3 << 4 = 63 → 0.25·4·31 = 31.
    block[1] = 0x0f;
    block[128 + 1] = 0x03;
    // x40 = 32 + 8 (group 1): low nibble of ql[32 + 8], bits 2–3 of qh[8]. q = 5 | 1 << 4 = 21 → 0.25·(−2)·(−11) = 5.5.
    block[40] = 0x05;
    block[128 + 8] = 0x04;
    // x150 = 128 + 22 (second half, group 0): low nibble of ql[64 + 22], bits 0–1 of qh[32 + 22].
    // q = 10 | 2 << 4 = 42 → 0.25·1·10 = 2.5.
    block[86] = 0x0a;
    block[128 + 54] = 0x02;
    // x255 = 128 + 96 + 31 (group 3): high nibble of ql[64 + 32 + 31], bits 6–7 of qh[32 + 31].
    // q = 63 → 0.25·(−128)·31 = −992.
    block[127] = 0xf0;
    block[128 + 63] = 0xc0;
    const { values, tensor: t } = await readBlock(GGML_TYPE.Q6_K, 256, block);
    assert.deepEqual(values, expectedBlock(256, 16, { 0: -32, 2: 16, 9: -8, 15: 1024 }, { 1: 31, 40: 5.5, 150: 2.5, 255: -992 }, -0));
    assert.deepEqual(t.quantization, { scheme: 'Q6_K', bitsPerValue: 6.5625 });
  });

  test('Q8_K: float32 d, 256 signed codes, 16 group sums that do not change the values', async () => {
    const block = Buffer.alloc(292);
    block.writeFloatLE(0.125, 0);
    block.writeInt8(8, 4 + 0); //      x0 = 1
    block.writeInt8(100, 4 + 100); //  x100 = 12.5
    block.writeInt8(-128, 4 + 255); // x255 = −16
    block.writeInt16LE(8, 260 + 0);
    block.writeInt16LE(100, 260 + 12);
    block.writeInt16LE(-128, 260 + 30);
    const { values } = await readBlock(GGML_TYPE.Q8_K, 256, block);
    assert.deepEqual(values, expectedBlock(256, 256, {}, { 0: 1, 100: 12.5, 255: -16 }));
  });
});

describe('a GGUF written by llama.cpp\'s gguf-py', () => {
  // test/fixtures/gguf/make_gguf_fixture.py: GGUFWriter's file, with gguf-py's own
  // dequantization of every quantized tensor stored beside it as NAME.expected.
  const fixture = fixturePath('gguf', 'tiny.gguf');

  test('its metadata, including the base model, is read as written', async () => {
    await withCheckpoint(fixture, async (checkpoint) => {
      assert.deepEqual(checkpoint.warnings, []);
      assert.deepEqual(checkpoint.metadata, {
        'general.architecture': 'llama',
        'general.name': 'Tiny Fixture',
        'general.base_model.count': 1,
        'general.base_model.0.name': 'Llama 3.1 8B',
        'general.base_model.0.organization': 'Meta Llama',
        'general.base_model.0.repo_url': 'https://huggingface.co/meta-llama/Llama-3.1-8B',
        'general.quantization_version': 2,
        'general.file_type': 15,
        'tokenizer.ggml.tokens': ['<s>', '</s>', 'a', 'b', 'ab'],
        'test.nested': [[1, 2], [3]],
      });
      const f32 = tensorNamed(checkpoint, 'plain.f32');
      const f16 = tensorNamed(checkpoint, 'plain.f16');
      assert.deepEqual([f32.dtype, f16.dtype], ['F32', 'F16']);
      assert.deepEqual(f32.shape, [2, 8]);
      // The f16 copy is the f32 values rounded to fp16.
      assert.deepEqual(await readAll(f16), (await readAll(f32)).map((value) => halfValue(halfBits(value))));
    });
  });

  test('every quantized tensor dequantizes bit for bit as llama.cpp\'s reference code does', async () => {
    await withCheckpoint(fixture, async (checkpoint) => {
      const quantized = checkpoint.tensors.filter((t) => t.quantization);
      assert.deepEqual(
        quantized.map((t) => t.quantization?.scheme),
        ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K'],
      );
      for (const t of quantized) {
        const expected = tensorNamed(checkpoint, `${t.name}.expected`);
        assert.deepEqual(t.shape, expected.shape, t.name);
        assert.deepStrictEqual(await readAll(t), await readAll(expected), t.name);
      }
    });
  });
});

// ---------------------------------------------------------------------------------------

const SCHEMES: readonly QuantScheme[] = ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'Q8_K'];

/**
 * Two rows of 1024: weights-like values, one row-block of zeros, one of large positive
 * values, one all negative, so that offsets, signs and scale extremes all occur.
 */
function roundTripValues(seed: number): Float32Array {
  const random = seededRandom(seed);
  const values = random.normals(2048, 0.02);
  values.fill(0, 256, 512);
  for (let i = 512; i < 768; i++) values[i] = 50 + random.uniform() * 100;
  for (let i = 768; i < 1024; i++) values[i] = -1 - random.uniform();
  return values;
}

describe('ggml quantization round trips', () => {
  for (const [index, scheme] of SCHEMES.entries()) {
    test(`${scheme}: quantized, written, read back within one step, and where its codes put it`, async () => {
      const values = roundTripValues(100 + index);
      const { bytes, dequantized } = quantize(scheme, values);
      const steps = blockSteps(scheme, values);
      const blockElements = values.length / steps.length;
      const file = writeTemp(encodeGguf({ tensors: [tensor('w', GGML_TYPE[scheme], [1024, 2], bytes)] }));
      await withCheckpoint(file, async (checkpoint) => {
        const t = tensorNamed(checkpoint, 'w');
        assert.deepEqual(t.shape, [2, 1024]);
        assert.equal(t.byteSize, bytes.length);
        const read = await t.read();
        const magnitudes = steps.map((_, block) => Math.max(...values.subarray(block * blockElements, (block + 1) * blockElements).map(Math.abs)));
        for (let i = 0; i < values.length; i++) {
          const block = Math.floor(i / blockElements);
          // The reader computes in float32, the writer from the codes in float64.
          if (!(Math.abs(read[i]! - dequantized[i]!) <= 1e-6 * magnitudes[block]!)) {
            assert.fail(`${scheme} value ${i}: read ${read[i]}, its codes say ${dequantized[i]}`);
          }
          if (!(Math.abs(read[i]! - values[i]!) <= steps[block]!)) {
            assert.fail(`${scheme} value ${i}: read ${read[i]} for ${values[i]}, more than the step ${steps[block]} away`);
          }
        }
      });
    });
  }

  test('any element range reads the same values as the whole tensor, and chunks stream whole blocks', async () => {
    for (const scheme of ['Q4_0', 'Q6_K'] as const) {
      const values = roundTripValues(7);
      const file = writeTemp(encodeGguf({ tensors: [tensor('w', GGML_TYPE[scheme], [1024, 2], quantize(scheme, values).bytes)] }));
      await withCheckpoint(file, async (checkpoint) => {
        const t = tensorNamed(checkpoint, 'w');
        const whole = await readAll(t);
        for (const [start, count] of [[0, 1], [31, 2], [250, 300], [1000, 48], [2047, 1], [5, 0], [0, 2048]] as const) {
          assert.deepEqual(Array.from(await t.read(start, count)), whole.slice(start, start + count), `${scheme} read(${start}, ${count})`);
        }
        const blockElements = scheme === 'Q4_0' ? 32 : 256;
        const chunks: Float64Array[] = [];
        for await (const chunk of t.chunks({ chunkElements: 100 })) chunks.push(chunk);
        const chunkElements = Math.ceil(100 / blockElements) * blockElements;
        const expectedLengths = Array.from({ length: Math.ceil(2048 / chunkElements) }, (_, i) => Math.min(chunkElements, 2048 - i * chunkElements));
        assert.deepEqual(chunks.map((chunk) => chunk.length), expectedLengths);
        assert.deepEqual(chunks.flatMap((chunk) => Array.from(chunk)), whole);
        await assert.rejects(t.read(2000, 49), CheckpointError);
      });
    }
  });

  test('a read larger than one bounded run of blocks is assembled from several runs', async () => {
    // 8 MiB of Q8_0 blocks is one run; 250 000 blocks (8.5 MB) need two. Block b has d = 1 and
    // codes (b + j) % 256 as signed bytes, so the blocks repeat every 256 and every value is known.
    const blocks = 250_000;
    const period = Buffer.alloc(256 * 34);
    const periodValues = new Float64Array(256 * 32);
    for (let b = 0; b < 256; b++) {
      period.writeUInt16LE(HALF.one, b * 34);
      for (let j = 0; j < 32; j++) {
        period[b * 34 + 2 + j] = (b + j) % 256;
        periodValues[b * 32 + j] = period.readInt8(b * 34 + 2 + j);
      }
    }
    const data = Buffer.alloc(blocks * 34).fill(period);
    const file = writeTemp(encodeGguf({ tensors: [tensor('big', GGML_TYPE.Q8_0, [32 * blocks], data)] }));
    await withCheckpoint(file, async (checkpoint) => {
      const values = await tensorNamed(checkpoint, 'big').read();
      assert.equal(values.length, 32 * blocks);
      let mismatches = 0;
      for (let i = 0; i < values.length; i++) if (values[i] !== periodValues[i % periodValues.length]) mismatches++;
      assert.equal(mismatches, 0);
    });
  });

  test('the test quantizers round fp16 scales to nearest even', () => {
    assert.equal(halfBits(1), 0x3c00);
    assert.equal(halfBits(-2), 0xc000);
    assert.equal(halfBits(2 ** -24), 0x0001);
    assert.equal(halfBits(2 ** -25), 0x0000); // a tie between 0 and the smallest subnormal goes to 0
    assert.equal(halfBits(1 + 2 ** -11), 0x3c00); // a tie goes to the even mantissa
    assert.equal(halfBits(1 + 3 * 2 ** -11), 0x3c02);
    assert.equal(halfBits(65520), 0x7c00);
    assert.equal(halfValue(halfBits(0.1)), 0.0999755859375);
  });
});

// ---------------------------------------------------------------------------------------

describe('GGUF bad input', () => {
  /** A header with one of everything, for cutting short at every byte. */
  const sample = encodeGguf({
    metadata: [
      ['general.architecture', str('llama')],
      ['general.alignment', u32(32)],
      ['list', array('array', [array('string', [str('ab')]), array('float64', [f64(1)])])],
      ['count', u64(3n)],
    ],
    tensors: [tensor('q', GGML_TYPE.Q4_0, [32], Buffer.alloc(18)), tensor('f', GGML_TYPE.F32, [2], float32(1, 2))],
  });

  test('a file cut short anywhere is refused as truncated', async () => {
    await assertRefused(Buffer.alloc(0), /the file is empty/);
    for (let length = 1; length < sample.length; length++) {
      // Cut inside the header, a read or a count runs out of bytes; cut in the data, a tensor does.
      await assertRefused(sample.subarray(0, length), /truncated|runs? past the end|only \d+ remain/);
    }
  });

  test('a file that is not GGUF is refused by its magic', async () => {
    await assertRefused(Buffer.concat([Buffer.from('GGML', 'latin1'), sample.subarray(4)]), /not a GGUF file: it starts with bytes 47 47 4d 4c/);
  });

  test('versions other than 2 and 3, and big-endian files, are refused clearly', async () => {
    await assertRefused(preamble(1, 0, 0), /GGUF version 1 .* is not supported/);
    await assertRefused(preamble(4, 0, 0), /unsupported GGUF version 4/);
    const bigEndian = Buffer.concat([Buffer.from('GGUF', 'latin1'), Buffer.from([0, 0, 0, 3]), Buffer.alloc(16)]);
    await assertRefused(bigEndian, /big-endian GGUF \(version 3\) is not supported/);
    const version2 = encodeGguf({ version: 2, metadata: [['a', u8(1)]] });
    await withCheckpoint(writeTemp(version2), async (checkpoint) => assert.deepEqual(checkpoint.metadata, { a: 1 }));
  });

  test('counts the file cannot hold are refused before anything is allocated for them', async () => {
    await assertRefused(preamble(3, 2n ** 63n, 0), /the tensor count: 9223372036854775808 items need at least/);
    await assertRefused(preamble(3, 0, 2n ** 64n - 1n), /the metadata entry count: 18446744073709551615 items need at least/);
    const entry = (type: GgufTypeName, count: bigint) =>
      Buffer.concat([preamble(3, 0, 1), ggufString('a'), uint32LE(9), uint32LE(GGUF_TYPE_CODE[type]), uint64LE(count)]);
    await assertRefused(entry('uint8', 2n ** 62n), /metadata "a": array of uint8: 4611686018427387904 items need at least/);
    await assertRefused(entry('string', 2n ** 61n), /array of string: .* items need at least 18446744073709551616 bytes/);
    await assertRefused(entry('array', 2n ** 60n), /array of array: .* items need at least/);
  });

  test('string lengths past the end of the file are refused, in keys, values and tensor names', async () => {
    await assertRefused(
      Buffer.concat([preamble(3, 0, 1), uint64LE(2n ** 64n - 1n), Buffer.alloc(64)]),
      /metadata key 0: a string of 18446744073709551615 bytes runs past the end/,
    );
    await assertRefused(
      Buffer.concat([preamble(3, 0, 1), ggufString('a'), uint32LE(8), uint64LE(2n ** 40n), Buffer.alloc(64)]),
      /metadata "a": a string of 1099511627776 bytes runs past the end of the file \(64 bytes remain\)/,
    );
    await assertRefused(
      Buffer.concat([preamble(3, 1, 0), uint64LE(1000n), Buffer.alloc(100)]),
      /the name of tensor 0: a string of 1000 bytes runs past the end/,
    );
    // Inside a vocabulary too long to keep, every skipped string is checked as well.
    const vocabulary = encodeEntry('tokens', array('string', Array.from({ length: 2000 }, () => str('t'))));
    vocabulary.writeBigUInt64LE(2n ** 50n, vocabulary.length - 9);
    await assertRefused(Buffer.concat([preamble(3, 0, 1), vocabulary]), /metadata "tokens": a string of 1125899906842624 bytes runs past the end/);
  });

  test('an unknown metadata value type is refused, at the top level and in arrays', async () => {
    await assertRefused(
      Buffer.concat([preamble(3, 0, 1), ggufString('odd'), uint32LE(13), Buffer.alloc(16)]),
      /metadata "odd": unknown value type 13/,
    );
    await assertRefused(
      Buffer.concat([preamble(3, 0, 1), ggufString('odd'), uint32LE(9), uint32LE(99), uint64LE(1), Buffer.alloc(16)]),
      /metadata "odd": unknown value type 99/,
    );
  });

  test('arrays nested deeper than any real file are refused', async () => {
    let value: GgufValue = array('uint8', []);
    for (let depth = 0; depth < 9; depth++) value = array('array', [value]);
    await assertRefused(encodeGguf({ metadata: [['deep', value]] }), /arrays nested more than 8 deep/);
  });

  test('duplicate keys and tensor names are refused', async () => {
    await assertRefused(encodeGguf({ metadata: [['a', u8(1)], ['a', u8(2)]] }), /metadata key "a" appears twice/);
    await assertRefused(
      encodeGguf({ tensors: [tensor('w', GGML_TYPE.F32, [1], float32(1)), tensor('w', GGML_TYPE.F32, [1], float32(2))] }),
      /tensor "w" is listed twice/,
    );
  });

  /** A file holding just the tensor described. */
  const oneTensor = (type: number, dims: readonly (number | bigint)[], data: Buffer, declaredOffset?: bigint) =>
    encodeGguf({ tensors: [tensor('w', type, dims, data, declaredOffset)] });

  test('tensor data past the end of the file is refused', async () => {
    await assertRefused(oneTensor(GGML_TYPE.F32, [4], float32(1, 2, 3, 4), 1024n), /tensor "w": its 16 bytes at offset 1024 .* run past the end/);
    await assertRefused(oneTensor(GGML_TYPE.F32, [4], float32(1, 2, 3, 4), 2n ** 63n), /tensor "w": its 16 bytes at offset 9223372036854775808/);
    // Dimensions that promise more data than was written.
    await assertRefused(oneTensor(GGML_TYPE.Q4_K, [256, 1000], Buffer.alloc(144)), /tensor "w": its 144000 bytes .* run past the end/);
  });

  test('dimensions that overflow, or too many of them, are refused', async () => {
    await assertRefused(
      oneTensor(GGML_TYPE.F32, [2n ** 32n, 2n ** 32n], Buffer.alloc(4)),
      /tensor "w": shape \[4294967296, 4294967296\] is too large/,
    );
    await assertRefused(oneTensor(GGML_TYPE.F32, [2n ** 60n], Buffer.alloc(4)), /tensor "w": dimension 1152921504606846976 is too large/);
    await assertRefused(oneTensor(GGML_TYPE.F32, [1, 1, 1, 1, 1], Buffer.alloc(4)), /tensor "w" has 5 dimensions; GGUF allows at most 4/);
    await assertRefused(Buffer.concat([preamble(3, 1, 0), ggufString('w'), uint32LE(2 ** 31), Buffer.alloc(64)]), /has 2147483648 dimensions/);
  });

  test('misaligned data offsets and impossible alignments are refused', async () => {
    await assertRefused(oneTensor(GGML_TYPE.F32, [1], float32(1), 4n), /tensor "w": data offset 4 is not a multiple of the alignment 32/);
    const aligned = (value: GgufValue) =>
      encodeGguf({ metadata: [['general.alignment', value]], tensors: [tensor('w', GGML_TYPE.F32, [1], float32(1))] });
    await assertRefused(aligned(u32(24)), /general.alignment is 24, not a power of two/);
    await assertRefused(aligned(u32(0)), /general.alignment is 0, not a power of two/);
    await assertRefused(aligned(str('32')), /general.alignment is "32", not a power of two/);
  });

  test('quantized rows that are not whole blocks, and overlapping tensors, are refused', async () => {
    await assertRefused(
      oneTensor(GGML_TYPE.Q4_0, [48], Buffer.alloc(36)),
      /tensor "w": rows of 48 values are not a whole number of Q4_0 blocks of 32/,
    );
    await assertRefused(
      encodeGguf({ tensors: [tensor('a', GGML_TYPE.F32, [16], Buffer.alloc(64)), tensor('b', GGML_TYPE.F32, [8], Buffer.alloc(32), 32n)] }),
      /tensors "a" and "b" overlap/,
    );
  });
});
