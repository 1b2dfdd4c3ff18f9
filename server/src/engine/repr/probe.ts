import { readdir, stat } from 'node:fs/promises';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { CheckpointError } from '../errors';
import { openCheckpoint } from '../formats/index';
import type { Tensor } from '../formats/tensor';
import { FileSource } from '../io/byteSource';

/**
 * Probe inputs X for the representation methods: the same batch goes through every candidate
 * and the child, so their features are comparable row by row. The paper probes with a batch of
 * the child's fine-tuning data; a user may give such a batch as a NumPy array (.npy/.npz) or a
 * folder of images (PNG, PGM, PPM). Without one, a deterministic default is built to the
 * model's input shape.
 *
 * Values are in the data range of images scaled to [0, 1] (8-bit pixels divided by 255), as
 * torchvision's ToTensor and the zoo's training data use; arrays are taken as they are, except
 * 8-bit arrays, which are pixels and are scaled the same way.
 */
export interface Probe {
  /** rows × product(sampleShape), row-major. */
  readonly values: Float32Array;
  readonly rows: number;
  /** The model's input shape, channels first for images. */
  readonly sampleShape: readonly number[];
  /** Where the probe came from, for reports. */
  readonly source: string;
}

export interface ProbeOptions {
  /** Most samples to use (default 64): the first ones of an array, the first images by name. */
  readonly rows?: number;
}

export interface DefaultProbeOptions {
  readonly rows?: number;
  readonly seed?: number;
}

export const DEFAULT_PROBE_ROWS = 64;
/** Images larger than this are refused before being read: a probe image is small. */
const MAX_IMAGE_BYTES = 64 * 1024 * 1024;
/** Decoded pixels per image, bounding what a header may ask to allocate. */
const MAX_IMAGE_PIXELS = 16 * 1024 * 1024;
/**
 * Values a probe may hold (512 MB of float32): 64 ImageNet-sized images take 10 M. Bounds what
 * an input shape read from a checkpoint's header can make the default probe or a folder allocate.
 */
const MAX_PROBE_VALUES = 128 * 1024 * 1024;
const IMAGE_EXTENSIONS = new Set(['.png', '.pgm', '.ppm', '.pnm']);
/** Arrays tried first when an .npz holds several that fit the model. */
const PREFERRED_ARRAY_NAMES = ['x', 'inputs', 'images', 'probe', 'data'];

/** The probe from `source` when given, else the default one. */
export async function probeFor(inputShape: readonly number[], source: string | undefined, options: ProbeOptions & DefaultProbeOptions = {}): Promise<Probe> {
  return source === undefined ? defaultProbe(inputShape, options) : loadProbe(source, inputShape, options);
}

/** Reads probe inputs from a .npy/.npz array or a folder of images; errors name the file. */
export async function loadProbe(source: string, inputShape: readonly number[], options: ProbeOptions = {}): Promise<Probe> {
  const rows = requestedRows(options.rows);
  const information = await stat(source).catch((error: NodeJS.ErrnoException) => {
    throw new CheckpointError(source, `cannot read the probe: ${error.code ?? error.message}`);
  });
  return information.isDirectory() ? loadImageFolder(source, inputShape, rows) : loadArray(source, inputShape, rows);
}

function requestedRows(rows: number | undefined): number {
  const value = rows ?? DEFAULT_PROBE_ROWS;
  if (!Number.isInteger(value) || value < 1) throw new Error(`a probe needs a positive whole number of rows, not ${value}`);
  return value;
}

function product(shape: readonly number[]): number {
  return shape.reduce((total, size) => total * size, 1);
}

function allocateProbe(rows: number, inputShape: readonly number[]): Float32Array {
  const size = rows * product(inputShape);
  if (!(size <= MAX_PROBE_VALUES)) throw new Error(`${rows} probe samples of shape [${inputShape.join(', ')}] exceed ${MAX_PROBE_VALUES} values; use fewer rows`);
  return new Float32Array(size);
}

// ---------------------------------------------------------------------------------------
// Arrays

/** How an array's samples map onto the model's input. */
type Layout = 'same' | 'channels-last';

/**
 * An array of samples [N, ...s] fits an input shape when s is the input shape up to axes of
 * size 1, when either is flat (a row-major flattening of the other, as the zoo stores 28×28
 * images as 784 values), or when s is the channels-last [H, W, C] of a [C, H, W] input, which
 * is transposed. Arrays are not resized: their samples must already have the model's size.
 */
function layoutOf(sample: readonly number[], input: readonly number[]): Layout | undefined {
  if (product(sample) !== product(input)) return undefined;
  const significant = (shape: readonly number[]) => shape.filter((size) => size !== 1);
  const [s, i] = [significant(sample), significant(input)];
  if (s.length <= 1 || i.length <= 1 || (s.length === i.length && s.every((size, k) => size === i[k]))) return 'same';
  if (input.length === 3 && sample.length === 3 && sample[0] === input[1] && sample[1] === input[2] && sample[2] === input[0]) return 'channels-last';
  return undefined;
}

async function loadArray(file: string, inputShape: readonly number[], rows: number): Promise<Probe> {
  const checkpoint = await openCheckpoint(file);
  try {
    const fitting = checkpoint.tensors.filter((tensor) => tensor.shape.length >= 2 && tensor.shape[0]! > 0 && layoutOf(tensor.shape.slice(1), inputShape));
    const chosen =
      fitting.length === 1 ? fitting[0] : PREFERRED_ARRAY_NAMES.map((name) => fitting.find((tensor) => tensor.name === name)).find((tensor) => tensor !== undefined);
    if (!chosen) {
      const listed = checkpoint.tensors.map((tensor) => `${tensor.name} [${tensor.shape.join(', ')}]`).join(', ');
      const problem =
        fitting.length === 0
          ? `no array holds samples of the model's input shape [${inputShape.join(', ')}] (arrays: ${listed || 'none'}); arrays are not resized`
          : `several arrays fit the model's input (${fitting.map((tensor) => tensor.name).join(', ')}); name one ${PREFERRED_ARRAY_NAMES.join(', ')}`;
      throw new CheckpointError(file, problem);
    }
    return await readSamples(file, chosen, inputShape, rows);
  } finally {
    await checkpoint.close();
  }
}

async function readSamples(file: string, tensor: Tensor, inputShape: readonly number[], rows: number): Promise<Probe> {
  const sampleShape = tensor.shape.slice(1);
  const sampleSize = product(sampleShape);
  const count = Math.min(rows, tensor.shape[0]!);
  const raw = await tensor.read(0, count * sampleSize);
  const scale = tensor.dtype === 'U8' ? 1 / 255 : 1;
  const values = new Float32Array(raw.length);
  if (layoutOf(sampleShape, inputShape) === 'channels-last') {
    const [channels, height, width] = inputShape as [number, number, number];
    for (let n = 0; n < count; n++) {
      for (let c = 0; c < channels; c++) {
        for (let p = 0; p < height * width; p++) values[n * sampleSize + c * height * width + p] = raw[n * sampleSize + p * channels + c]! * scale;
      }
    }
  } else {
    for (let i = 0; i < raw.length; i++) values[i] = raw[i]! * scale;
  }
  if (values.some((value) => !Number.isFinite(value))) throw new CheckpointError(file, `array ${tensor.name} holds values that are not finite`);
  return {
    values,
    rows: count,
    sampleShape: [...inputShape],
    source: `${file} [${tensor.name}] (${count} of ${tensor.shape[0]} samples${scale !== 1 ? ', 8-bit values scaled by 1/255' : ''})`,
  };
}

// ---------------------------------------------------------------------------------------
// Images

/** Channels, height and width an image input has: [C, H, W], [H, W] as one channel, or a flat square. */
export function imageLayout(inputShape: readonly number[]): [number, number, number] | undefined {
  if (inputShape.length === 3) return [inputShape[0]!, inputShape[1]!, inputShape[2]!];
  if (inputShape.length === 2) return [1, inputShape[0]!, inputShape[1]!];
  if (inputShape.length !== 1) return undefined;
  for (const channels of [1, 3]) {
    const side = Math.round(Math.sqrt(inputShape[0]! / channels));
    if (side * side * channels === inputShape[0]) return [channels, side, side];
  }
  return undefined;
}

/** Decoded pixels: height × width × channels interleaved, in [0, 1]. */
export interface DecodedImage {
  readonly width: number;
  readonly height: number;
  /** 1 (gray) or 3 (RGB); alpha is dropped. */
  readonly channels: 1 | 3;
  readonly pixels: Float32Array;
}

/**
 * The first `rows` images of a folder in natural name order, each converted and resized to
 * the model's input: gray → RGB repeats the gray value, RGB → gray takes ITU-R 601 luma
 * (0.299 R + 0.587 G + 0.114 B), alpha is dropped, and the image is stretched to H × W by a
 * separable triangle (bilinear) filter whose support widens with the reduction factor when
 * shrinking, so every source pixel counts (Pillow's Image.resize(BILINEAR)).
 */
async function loadImageFolder(folder: string, inputShape: readonly number[], rows: number): Promise<Probe> {
  const layout = imageLayout(inputShape);
  if (!layout) throw new CheckpointError(folder, `the model's input [${inputShape.join(', ')}] is not an image, so a folder of images cannot feed it`);
  const [channels, height, width] = layout;
  if (channels !== 1 && channels !== 3) throw new CheckpointError(folder, `the model takes ${channels}-channel images; images give 1 or 3 channels`);
  const entries = await readdir(folder, { withFileTypes: true });
  const files = entries
    .filter((entry) => entry.isFile() && IMAGE_EXTENSIONS.has(path.extname(entry.name).toLowerCase()))
    .map((entry) => entry.name)
    .sort(new Intl.Collator('en', { numeric: true }).compare)
    .slice(0, rows);
  if (files.length === 0) throw new CheckpointError(folder, 'no PNG, PGM or PPM images in this folder');
  const sampleSize = channels * height * width;
  const values = allocateProbe(files.length, inputShape);
  for (const [n, name] of files.entries()) {
    const file = path.join(folder, name);
    const image = decodeImage(file, await readImageFile(file));
    values.set(toChannelsFirst(resize(convertChannels(image, channels), width, height)), n * sampleSize);
  }
  return { values, rows: files.length, sampleShape: [...inputShape], source: `${files.length} images from ${folder}, resized to ${channels}×${height}×${width}` };
}

async function readImageFile(file: string): Promise<Buffer> {
  const source = await FileSource.open(file);
  try {
    if (source.size > MAX_IMAGE_BYTES) throw new CheckpointError(file, `${source.size} bytes is too large for a probe image (at most ${MAX_IMAGE_BYTES})`);
    return await source.read(0, source.size);
  } finally {
    await source.close();
  }
}

export function decodeImage(file: string, bytes: Buffer): DecodedImage {
  if (bytes.subarray(0, PNG_SIGNATURE.length).equals(PNG_SIGNATURE)) return decodePng(file, bytes);
  if (bytes[0] === 0x50 /* P */ && (bytes[1] === 0x35 || bytes[1] === 0x36) /* 5 or 6 */) return decodeNetpbm(file, bytes);
  throw new CheckpointError(file, 'not a PNG or a binary PGM/PPM image');
}

function convertChannels(image: DecodedImage, channels: number): DecodedImage {
  if (image.channels === channels) return image;
  const count = image.width * image.height;
  const pixels = new Float32Array(count * channels);
  for (let p = 0; p < count; p++) {
    if (channels === 3) {
      pixels.fill(image.pixels[p]!, 3 * p, 3 * p + 3);
    } else {
      pixels[p] = 0.299 * image.pixels[3 * p]! + 0.587 * image.pixels[3 * p + 1]! + 0.114 * image.pixels[3 * p + 2]!;
    }
  }
  return { width: image.width, height: image.height, channels: channels as 1 | 3, pixels };
}

/** Resizes width then height with the triangle filter described at loadImageFolder. */
export function resize(image: DecodedImage, width: number, height: number): DecodedImage {
  if (image.width === width && image.height === height) return image;
  const channels = image.channels;
  const across = resampling(image.width, width);
  const wide = new Float32Array(image.height * width * channels);
  for (let y = 0; y < image.height; y++) {
    for (let x = 0; x < width; x++) {
      const { first, weights } = across[x]!;
      for (let c = 0; c < channels; c++) {
        let sum = 0;
        weights.forEach((weight, k) => (sum += weight * image.pixels[(y * image.width + first + k) * channels + c]!));
        wide[(y * width + x) * channels + c] = sum;
      }
    }
  }
  const down = resampling(image.height, height);
  const pixels = new Float32Array(height * width * channels);
  for (let y = 0; y < height; y++) {
    const { first, weights } = down[y]!;
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++) {
        let sum = 0;
        weights.forEach((weight, k) => (sum += weight * wide[((first + k) * width + x) * channels + c]!));
        pixels[(y * width + x) * channels + c] = sum;
      }
    }
  }
  return { width, height, channels, pixels };
}

/**
 * Per output position, the source positions it reads and their weights: a triangle of
 * half-width max(1, in/out) source pixels centred on the output pixel's centre mapped into the
 * source, clipped to the image and normalised to sum to 1.
 */
function resampling(inSize: number, outSize: number): { first: number; weights: number[] }[] {
  const scale = inSize / outSize;
  const spread = Math.max(1, scale);
  return Array.from({ length: outSize }, (_, i) => {
    const centre = (i + 0.5) * scale;
    const first = Math.max(0, Math.floor(centre - spread + 0.5));
    const last = Math.min(inSize, Math.floor(centre + spread + 0.5));
    const weights: number[] = [];
    for (let j = first; j < last; j++) weights.push(Math.max(0, 1 - Math.abs((j + 0.5 - centre) / spread)));
    const total = weights.reduce((sum, weight) => sum + weight, 0);
    return { first, weights: weights.map((weight) => weight / total) };
  });
}

function toChannelsFirst(image: DecodedImage): Float32Array {
  const { width, height, channels, pixels } = image;
  const planar = new Float32Array(pixels.length);
  for (let p = 0; p < width * height; p++) for (let c = 0; c < channels; c++) planar[c * width * height + p] = pixels[p * channels + c]!;
  return planar;
}

function checkDimensions(file: string, width: number, height: number): void {
  if (width < 1 || height < 1 || width * height > MAX_IMAGE_PIXELS) {
    throw new CheckpointError(file, `image of ${width}×${height} pixels is empty or larger than ${MAX_IMAGE_PIXELS} pixels`);
  }
}

// ---------------------------------------------------------------------------------------
// PNG (ISO/IEC 15948): 8-bit gray, RGB, palette, gray+alpha, RGBA; not interlaced.

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
/** Samples per pixel by colour type. */
const PNG_SAMPLES: Readonly<Record<number, number>> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const PNG_PALETTE = 3;
const CHUNK_OVERHEAD = 12;

function decodePng(file: string, bytes: Buffer): DecodedImage {
  let offset = PNG_SIGNATURE.length;
  let header: { width: number; height: number; colourType: number } | undefined;
  let palette: Buffer | undefined;
  const data: Buffer[] = [];
  let ended = false;
  while (!ended) {
    if (offset + CHUNK_OVERHEAD > bytes.length) throw new CheckpointError(file, 'PNG is truncated: it ends before its IEND chunk');
    const length = bytes.readUInt32BE(offset);
    const type = bytes.toString('latin1', offset + 4, offset + 8);
    if (length > bytes.length - offset - CHUNK_OVERHEAD) throw new CheckpointError(file, `PNG chunk ${type} of ${length} bytes runs past the end of the file`);
    const body = bytes.subarray(offset + 8, offset + 8 + length);
    if (crc32(bytes.subarray(offset + 4, offset + 8 + length)) !== bytes.readUInt32BE(offset + 8 + length)) {
      throw new CheckpointError(file, `PNG chunk ${type} fails its CRC check`);
    }
    offset += CHUNK_OVERHEAD + length;
    if (!header && type !== 'IHDR') throw new CheckpointError(file, 'PNG does not start with an IHDR chunk');
    switch (type) {
      case 'IHDR':
        header = pngHeader(file, body);
        break;
      case 'PLTE':
        palette = body;
        break;
      case 'IDAT':
        data.push(body);
        break;
      case 'IEND':
        ended = true;
        break;
    }
  }
  const { width, height, colourType } = header!;
  const samples = PNG_SAMPLES[colourType]!;
  const stride = width * samples;
  const expected = height * (1 + stride);
  let raw: Buffer;
  try {
    // One byte more than needed: an image whose data inflates past its size is reported, not cut.
    raw = zlib.inflateSync(Buffer.concat(data), { maxOutputLength: expected + 1 });
  } catch (error) {
    throw new CheckpointError(file, `PNG image data does not inflate: ${(error as Error).message}`);
  }
  if (raw.length !== expected) throw new CheckpointError(file, `PNG image data holds ${raw.length} bytes where ${width}×${height} pixels need ${expected}`);
  const pixels = unfilter(file, raw, height, stride, samples);
  return colourType === PNG_PALETTE ? fromPalette(file, pixels, width, height, palette) : toDecoded(pixels, width, height, samples);
}

function pngHeader(file: string, body: Buffer): { width: number; height: number; colourType: number } {
  const IHDR_BYTES = 13;
  if (body.length !== IHDR_BYTES) throw new CheckpointError(file, `PNG IHDR chunk has ${body.length} bytes, not ${IHDR_BYTES}`);
  const width = body.readUInt32BE(0);
  const height = body.readUInt32BE(4);
  const [bitDepth, colourType, compression, filter, interlace] = [body[8]!, body[9]!, body[10]!, body[11]!, body[12]!];
  checkDimensions(file, width, height);
  if (PNG_SAMPLES[colourType] === undefined) throw new CheckpointError(file, `PNG colour type ${colourType} is not defined`);
  if (bitDepth !== 8) throw new CheckpointError(file, `PNG with ${bitDepth} bits per sample; probe images must have 8`);
  if (compression !== 0 || filter !== 0) throw new CheckpointError(file, 'PNG uses an unknown compression or filter method');
  if (interlace !== 0) throw new CheckpointError(file, 'interlaced (Adam7) PNG is not supported; save the image without interlacing');
  return { width, height, colourType };
}

/** Reverses PNG's per-row filters (None, Sub, Up, Average, Paeth). */
function unfilter(file: string, raw: Buffer, height: number, stride: number, bytesPerPixel: number): Uint8Array {
  const out = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    const source = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = y * stride;
    for (let x = 0; x < stride; x++) {
      const left = x >= bytesPerPixel ? out[row + x - bytesPerPixel]! : 0;
      const up = y > 0 ? out[row - stride + x]! : 0;
      const upLeft = y > 0 && x >= bytesPerPixel ? out[row - stride + x - bytesPerPixel]! : 0;
      let predictor: number;
      switch (filter) {
        case 0:
          predictor = 0;
          break;
        case 1:
          predictor = left;
          break;
        case 2:
          predictor = up;
          break;
        case 3:
          predictor = (left + up) >> 1;
          break;
        case 4:
          predictor = paeth(left, up, upLeft);
          break;
        default:
          throw new CheckpointError(file, `PNG row ${y} has unknown filter type ${filter}`);
      }
      out[row + x] = (source[x]! + predictor) & 0xff;
    }
  }
  return out;
}

function paeth(left: number, up: number, upLeft: number): number {
  const estimate = left + up - upLeft;
  const [toLeft, toUp, toUpLeft] = [Math.abs(estimate - left), Math.abs(estimate - up), Math.abs(estimate - upLeft)];
  if (toLeft <= toUp && toLeft <= toUpLeft) return left;
  return toUp <= toUpLeft ? up : upLeft;
}

function fromPalette(file: string, indices: Uint8Array, width: number, height: number, palette: Buffer | undefined): DecodedImage {
  if (!palette || palette.length % 3 !== 0 || palette.length === 0) throw new CheckpointError(file, 'palette PNG without a valid PLTE chunk');
  const colours = palette.length / 3;
  const pixels = new Float32Array(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    const index = indices[p]!;
    if (index >= colours) throw new CheckpointError(file, `PNG pixel uses palette entry ${index} of ${colours}`);
    for (let c = 0; c < 3; c++) pixels[3 * p + c] = palette[3 * index + c]! / 255;
  }
  return { width, height, channels: 3, pixels };
}

/** 8-bit samples to [0, 1], keeping gray or RGB and dropping alpha. */
function toDecoded(samples: Uint8Array, width: number, height: number, samplesPerPixel: number): DecodedImage {
  const channels = samplesPerPixel >= 3 ? 3 : 1;
  const pixels = new Float32Array(width * height * channels);
  for (let p = 0; p < width * height; p++) for (let c = 0; c < channels; c++) pixels[p * channels + c] = samples[p * samplesPerPixel + c]! / 255;
  return { width, height, channels, pixels };
}

let crcTable: Uint32Array | undefined;

/** CRC-32 (ISO 3309) as PNG chunks carry it. */
function crc32(bytes: Uint8Array): number {
  crcTable ??= Uint32Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  let crc = 0xffffffff;
  for (const byte of bytes) crc = crcTable[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------------------------------
// Binary Netpbm: P5 (gray) and P6 (RGB), 8 or 16 bits per sample (maxval above 255, big-endian).

const NETPBM_HEADER_FIELDS = 3;
const MAX_NETPBM_HEADER_BYTES = 1024;
/** Widths, heights and maximum values of real images fit in 9 digits. */
const MAX_NETPBM_DIGITS = 9;

function decodeNetpbm(file: string, bytes: Buffer): DecodedImage {
  const channels = bytes[1] === 0x36 ? 3 : 1;
  const fields: number[] = [];
  let offset = 2;
  while (fields.length < NETPBM_HEADER_FIELDS) {
    if (offset >= Math.min(bytes.length, MAX_NETPBM_HEADER_BYTES)) throw new CheckpointError(file, 'PGM/PPM header is truncated or malformed');
    const byte = bytes[offset]!;
    if (byte === 0x23 /* # comment to end of line */) {
      while (offset < bytes.length && bytes[offset] !== 0x0a && bytes[offset] !== 0x0d) offset++;
    } else if (isWhitespace(byte)) {
      offset++;
    } else if (isDigit(byte)) {
      const start = offset;
      while (offset < bytes.length && isDigit(bytes[offset]!)) offset++;
      if (offset - start > MAX_NETPBM_DIGITS) throw new CheckpointError(file, 'PGM/PPM header holds a number too large for an image');
      fields.push(Number(bytes.toString('latin1', start, offset)));
    } else {
      throw new CheckpointError(file, `PGM/PPM header has an unexpected byte 0x${byte.toString(16)}`);
    }
  }
  // Exactly one whitespace byte separates the header from the pixels.
  if (!isWhitespace(bytes[offset] ?? 0)) throw new CheckpointError(file, 'PGM/PPM header does not end in whitespace');
  offset++;
  const [width, height, maxValue] = fields as [number, number, number];
  checkDimensions(file, width, height);
  if (maxValue < 1 || maxValue > 0xffff) throw new CheckpointError(file, `PGM/PPM maximum value ${maxValue} is outside 1..65535`);
  const sampleBytes = maxValue > 0xff ? 2 : 1;
  const count = width * height * channels;
  if (bytes.length - offset < count * sampleBytes) throw new CheckpointError(file, `PGM/PPM is truncated: ${width}×${height} pixels need ${count * sampleBytes} bytes`);
  const pixels = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const sample = sampleBytes === 1 ? bytes[offset + i]! : bytes.readUInt16BE(offset + 2 * i);
    pixels[i] = Math.min(sample, maxValue) / maxValue;
  }
  return { width, height, channels: channels as 1 | 3, pixels };
}

function isDigit(byte: number): boolean {
  return byte >= 0x30 && byte <= 0x39;
}

function isWhitespace(byte: number): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d || byte === 0x0b || byte === 0x0c;
}

// ---------------------------------------------------------------------------------------
// The default probe

/** Cosine components summed per image channel. */
const DEFAULT_COMPONENTS = 8;
/** Highest spatial frequency of a component, in cycles per image side. */
const DEFAULT_MAX_CYCLES = 4;

/**
 * Used when the user gives no data. For image inputs: smooth random images, each channel a sum
 * of DEFAULT_COMPONENTS random plane waves of at most DEFAULT_MAX_CYCLES cycles per side with
 * amplitudes falling as 1/(1 + frequency), stretched to fill [0, 1]. Natural images hold most
 * of their energy at low spatial frequencies (an amplitude spectrum near 1/f), so such images
 * keep a trained network's units in their usual operating range, where white noise would not,
 * while depending on no data set. For other inputs (a flat vector that is no square image):
 * uniform values in [0, 1). Deterministic: the same seed gives the same probe on every machine.
 */
export function defaultProbe(inputShape: readonly number[], options: DefaultProbeOptions = {}): Probe {
  const rows = requestedRows(options.rows);
  const seed = options.seed ?? 0;
  const random = mulberry32(seed);
  const values = allocateProbe(rows, inputShape);
  const layout = imageLayout(inputShape);
  if (!layout) {
    for (let i = 0; i < values.length; i++) values[i] = random();
    return { values, rows, sampleShape: [...inputShape], source: `default probe: ${rows} uniform random samples in [0, 1) (seed ${seed})` };
  }
  const [channels, height, width] = layout;
  for (let n = 0; n < rows; n++) {
    for (let c = 0; c < channels; c++) {
      smoothImage(values.subarray((n * channels + c) * height * width, (n * channels + c + 1) * height * width), height, width, random);
    }
  }
  return { values, rows, sampleShape: [...inputShape], source: `default probe: ${rows} smooth random images ${channels}×${height}×${width} in [0, 1] (seed ${seed})` };
}

function smoothImage(target: Float32Array, height: number, width: number, random: () => number): void {
  const components = Array.from({ length: DEFAULT_COMPONENTS }, () => {
    const [u, v] = [(2 * random() - 1) * DEFAULT_MAX_CYCLES, (2 * random() - 1) * DEFAULT_MAX_CYCLES];
    return { u, v, phase: 2 * Math.PI * random(), amplitude: 1 / (1 + Math.hypot(u, v)) };
  });
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let sum = 0;
      for (const { u, v, phase, amplitude } of components) sum += amplitude * Math.cos(2 * Math.PI * ((u * x) / width + (v * y) / height) + phase);
      target[y * width + x] = sum;
    }
  }
  let [low, high] = [Infinity, -Infinity];
  for (const value of target) [low, high] = [Math.min(low, value), Math.max(high, value)];
  const span = high - low;
  for (let i = 0; i < target.length; i++) target[i] = span > 0 ? (target[i]! - low) / span : 0.5;
}

/** mulberry32: a small 32-bit generator with a full period, uniform on [0, 1); tests draw from it too. */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
