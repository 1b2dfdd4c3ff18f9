import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { describeError, throwIfAborted } from '../errors';
import type { Relation } from './derived';

/**
 * Declared lineage: what the files next to a checkpoint (and its own metadata) say it was made
 * from. Declarations are often missing, stale or wrong, so they are evidence to check against
 * the weights, not answers; `conflicts` lists where the two disagree.
 */
export interface DeclaredLink {
  /** Checkpoint path relative to the scanned folder. */
  readonly child: string;
  /** The declared parent resolved to a checkpoint of the folder (relative path), when it resolves. */
  readonly parent?: string;
  /** What was declared: a hub id, a path, a file hash or the previous checkpoint of a run. */
  readonly parentName: string;
  readonly relation: Relation;
  /** File and field the declaration came from, e.g. "runs/a/config.json _name_or_path". */
  readonly source: string;
  /** Strong: a base-file hash or the step order of one run. Weak: a name, which may be stale. */
  readonly strength: 'strong' | 'weak';
}

export interface DeclaredCheckpoint {
  /** Relative to the scanned folder, or absolute. */
  readonly path: string;
  readonly metadata: Readonly<Record<string, unknown>>;
}

export interface DeclaredOptions {
  readonly signal?: AbortSignal;
  /** Told once about each source ignored as unreadable or malformed, and each ambiguous name. */
  readonly onWarning?: (message: string) => void;
  /** Larger files are never hashed to resolve a declared base-file SHA-256. */
  readonly maxHashBytes?: number;
}

export interface LineageConflict {
  readonly child: string;
  readonly declaredParent: string;
  /** The parent the weights chose, when they chose one. */
  readonly detectedParent?: string;
  readonly message: string;
}

/** Stable Diffusion bases reach several GiB; beyond this, hashing costs more than the claim is worth. */
const DEFAULT_MAX_HASH_BYTES = 32 * 1024 ** 3;
/** Sidecar files (configs, model cards, trainer states) larger than this are not read. */
const MAX_SIDECAR_BYTES = 16 * 1024 * 1024;
const HASH_CHUNK_BYTES = 1024 * 1024;

/** Files a Hugging Face Trainer saves beside the weights: training state, not models. */
const TRAINER_SIDE_FILE = /^(optimizer|scheduler|scaler|training_args)\.(pt|bin)$|^rng_state(_\d+)?\.pth$/;
const TRAINER_CHECKPOINT_FOLDER = /^checkpoint-(\d+)$/;
/** Shards of one model (model-00001-of-00003.safetensors) are parts, not checkpoints of a run. */
const SHARD_NAME = /\d+-of-\d+/;

/** Names tried first when a declared folder holds several checkpoints. */
const PREFERRED_WEIGHT_FILES = [
  'model.safetensors',
  'model.safetensors.index.json',
  'adapter_model.safetensors',
  'pytorch_model.bin',
  'pytorch_model.bin.index.json',
  'adapter_model.bin',
];

interface Entry {
  readonly relative: string;
  readonly absolute: string;
  readonly directory: string;
  readonly metadata: Readonly<Record<string, unknown>>;
}

/** A claim about one checkpoint's parents, not yet resolved to files. */
interface Declaration {
  /** Several names declare a merge. */
  readonly names: readonly string[];
  readonly relation: Relation;
  readonly source: string;
  /** Folder of the declaring file: relative paths are read from here. */
  readonly directory: string;
  /** The declaring file describes the model folder it lies in, so naming that folder names the model itself. */
  readonly describesItsFolder: boolean;
}

/** State of one `readDeclaredLineage` call; its memos die with the call. */
interface Scan {
  readonly folder: string;
  readonly entries: readonly Entry[];
  readonly byPath: ReadonlyMap<string, Entry>;
  readonly byDirectory: ReadonlyMap<string, readonly Entry[]>;
  readonly signal?: AbortSignal;
  readonly maxHashBytes: number;
  readonly warn: (message: string) => void;
  /** Declarations of each sidecar file looked at; undefined when the file does not exist. */
  readonly sidecars: Map<string, Promise<Declaration[] | undefined>>;
  readonly digests: Map<string, Promise<string | undefined>>;
  readonly sizes: Map<string, Promise<number | undefined>>;
}

/** Reads every declared parent of `checkpoints` (which lie under `folder`) and resolves it within the folder. */
export async function readDeclaredLineage(
  folder: string,
  checkpoints: readonly DeclaredCheckpoint[],
  options: DeclaredOptions = {},
): Promise<DeclaredLink[]> {
  const scan = makeScan(folder, checkpoints, options);
  const links: DeclaredLink[] = [];
  for (const entry of scan.entries) {
    throwIfAborted(scan.signal);
    for (const declaration of await sidecarDeclarations(scan, entry)) links.push(...resolveDeclaration(scan, entry, declaration));
    links.push(...(await metadataLinks(scan, entry)));
  }
  links.push(...(await trainerRunLinks(scan)), ...numberedFileLinks(scan));
  return mergeDuplicates(links).sort((a, b) => a.child.localeCompare(b.child));
}

function makeScan(folder: string, checkpoints: readonly DeclaredCheckpoint[], options: DeclaredOptions): Scan {
  const root = path.resolve(folder);
  const byPath = new Map<string, Entry>();
  for (const checkpoint of checkpoints) {
    const absolute = path.resolve(root, checkpoint.path);
    const relative = path.relative(root, absolute);
    if (relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative)) continue;
    byPath.set(absolute, { relative, absolute, directory: path.dirname(absolute), metadata: checkpoint.metadata });
  }
  const byDirectory = new Map<string, Entry[]>();
  for (const entry of byPath.values()) byDirectory.set(entry.directory, [...(byDirectory.get(entry.directory) ?? []), entry]);
  const warned = new Set<string>();
  return {
    folder: root,
    entries: [...byPath.values()],
    byPath,
    byDirectory,
    signal: options.signal,
    maxHashBytes: options.maxHashBytes ?? DEFAULT_MAX_HASH_BYTES,
    warn: (message) => {
      if (warned.has(message)) return;
      warned.add(message);
      options.onWarning?.(message);
    },
    sidecars: new Map(),
    digests: new Map(),
    sizes: new Map(),
  };
}

// ---------------------------------------------------------------------------------------------
// Sidecar files: config.json, adapter_config.json, README.md

interface Claim {
  readonly field: string;
  readonly names: readonly string[];
  readonly relation: Relation;
}

/** Each sidecar file name and how to read its claim; a reader throws when the file is malformed. */
const SIDECAR_READERS: readonly { readonly fileName: string; readonly read: (text: string) => Claim | undefined }[] = [
  { fileName: 'config.json', read: (text) => jsonNameClaim(text, '_name_or_path', 'finetune') },
  { fileName: 'adapter_config.json', read: (text) => jsonNameClaim(text, 'base_model_name_or_path', 'adapter') },
  { fileName: 'README.md', read: modelCardClaim },
];

/** For each kind of sidecar, the nearest one at or above the checkpoint, within the folder. */
async function sidecarDeclarations(scan: Scan, entry: Entry): Promise<Declaration[]> {
  const found: Declaration[] = [];
  for (const reader of SIDECAR_READERS) {
    for (const directory of directoriesUpToFolder(scan, entry.directory)) {
      const declarations = await sidecarFile(scan, path.join(directory, reader.fileName), reader.read);
      if (declarations === undefined) continue;
      found.push(...declarations);
      break;
    }
  }
  return found;
}

function directoriesUpToFolder(scan: Scan, start: string): string[] {
  const directories: string[] = [];
  for (let directory = start; ; directory = path.dirname(directory)) {
    directories.push(directory);
    if (directory === scan.folder || path.dirname(directory) === directory) return directories;
  }
}

function sidecarFile(scan: Scan, file: string, read: (text: string) => Claim | undefined): Promise<Declaration[] | undefined> {
  let declarations = scan.sidecars.get(file);
  if (!declarations) {
    declarations = readSidecar(scan, file, read);
    scan.sidecars.set(file, declarations);
  }
  return declarations;
}

async function readSidecar(scan: Scan, file: string, read: (text: string) => Claim | undefined): Promise<Declaration[] | undefined> {
  const text = await readSmallFile(scan, file);
  if (text === undefined) return undefined;
  let claim: Claim | undefined;
  try {
    claim = read(text);
  } catch (error) {
    scan.warn(`${relativeToFolder(scan, file)}: ignored (${describeError(error)})`);
    return [];
  }
  if (!claim || claim.names.length === 0) return [];
  return [{
    names: claim.names,
    relation: claim.relation,
    source: `${relativeToFolder(scan, file)} ${claim.field}`,
    directory: path.dirname(file),
    describesItsFolder: true,
  }];
}

/** The file's text; undefined when it does not exist, is too large or cannot be read (warned). */
async function readSmallFile(scan: Scan, file: string): Promise<string | undefined> {
  try {
    const stats = await fs.stat(file);
    if (!stats.isFile()) return undefined;
    if (stats.size > MAX_SIDECAR_BYTES) {
      scan.warn(`${relativeToFolder(scan, file)}: ignored (larger than ${MAX_SIDECAR_BYTES} bytes)`);
      return undefined;
    }
    return await fs.readFile(file, 'utf8');
  } catch (error) {
    if (!isMissingFile(error)) scan.warn(`${relativeToFolder(scan, file)}: ignored (${describeError(error)})`);
    return undefined;
  }
}

function isMissingFile(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function jsonNameClaim(text: string, field: string, relation: Relation): Claim | undefined {
  const name = nonEmptyString(parseJsonObject(text)[field]);
  return name === undefined ? undefined : { field, names: [name], relation };
}

function parseJsonObject(text: string): Record<string, unknown> {
  const value: unknown = JSON.parse(text);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new SyntaxError('not a JSON object');
  return value as Record<string, unknown>;
}

function nonEmptyString(value: unknown): string | undefined {
  return typeof value === 'string' && value.trim() !== '' ? value.trim() : undefined;
}

/** Hugging Face `base_model_relation` values. */
const CARD_RELATIONS: ReadonlyMap<string, Relation> = new Map([
  ['adapter', 'adapter'],
  ['merge', 'merged'],
  ['quantized', 'quantized'],
  ['finetune', 'finetune'],
]);

function modelCardClaim(text: string): Claim | undefined {
  const values = readFrontMatter(text, ['base_model', 'base_model_relation']);
  const base = values.get('base_model');
  const names = (typeof base === 'string' ? [base] : base ?? []).filter((name) => name.trim() !== '');
  if (names.length === 0) return undefined;
  const declared = values.get('base_model_relation');
  if (Array.isArray(declared)) throw new SyntaxError('base_model_relation is a list');
  const relation = declared ? CARD_RELATIONS.get(declared) ?? 'unknown' : names.length >= 2 ? 'merged' : 'finetune';
  return { field: declared ? 'base_model, base_model_relation' : 'base_model', names, relation };
}

// ---------------------------------------------------------------------------------------------
// A strict reader for the few front-matter keys needed. It recognises top-level `key: value`
// lines, scalars (plain, 'single' or "double" quoted), inline [a, b] lists and `- item` block
// lists; anything else under a wanted key makes the whole front matter malformed.

type FrontMatterValue = string | string[] | null;

interface RawKey {
  /** Text after `key:`, comment included: only wanted keys are read further. */
  readonly inline: string;
  readonly items: { readonly indent: number; readonly text: string }[];
  /** Indented lines that are not list items: a mapping or a multi-line value. */
  nested: boolean;
}

const TOP_LEVEL_KEY = /^([A-Za-z_][\w.-]*)[ \t]*:(?:[ \t]+(.*))?$/;
const LIST_ITEM = /^( *)-(?:[ \t]+(.*))?$/;
const YAML_INDICATORS = new Set(['[', ']', '{', '}', '&', '*', '!', '|', '>', '%', '@', '`', ',', '?']);
const YAML_NULLS = new Set(['', '~', 'null', 'Null', 'NULL']);

/** The values of `wanted` top-level keys; empty when the text has no front matter. Throws when it is malformed. */
function readFrontMatter(text: string, wanted: readonly string[]): Map<string, FrontMatterValue> {
  const lines = frontMatterLines(text);
  const values = new Map<string, FrontMatterValue>();
  if (!lines) return values;
  const keys = rawKeys(lines);
  for (const key of wanted) {
    const raw = keys.get(key);
    if (raw) values.set(key, keyValue(key, raw));
  }
  return values;
}

/** Lines between the opening `---` and the closing `---` or `...`; undefined when there is no front matter. */
function frontMatterLines(text: string): string[] | undefined {
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  if (lines[0]?.trimEnd() !== '---') return undefined;
  const end = lines.findIndex((line, index) => index > 0 && /^(---|\.\.\.)\s*$/.test(line));
  if (end < 0) throw new SyntaxError('front matter is not closed');
  return lines.slice(1, end);
}

function rawKeys(lines: readonly string[]): Map<string, RawKey> {
  const keys = new Map<string, RawKey>();
  let current: RawKey | undefined;
  for (const line of lines) {
    if (/^\s*(#.*)?$/.test(line)) continue;
    if (line.startsWith('\t')) throw new SyntaxError('front matter indented with a tab');
    const item = LIST_ITEM.exec(line);
    if (item && current) {
      current.items.push({ indent: item[1]!.length, text: item[2] ?? '' });
      continue;
    }
    if (line.startsWith(' ')) {
      if (!current) throw new SyntaxError('front matter starts with an indented line');
      current.nested = true;
      continue;
    }
    const key = TOP_LEVEL_KEY.exec(line);
    if (!key) throw new SyntaxError(`unexpected front matter line "${line.slice(0, 60)}"`);
    if (keys.has(key[1]!)) throw new SyntaxError(`front matter repeats the key ${key[1]}`);
    current = { inline: key[2] ?? '', items: [], nested: false };
    keys.set(key[1]!, current);
  }
  return keys;
}

function keyValue(key: string, raw: RawKey): FrontMatterValue {
  if (raw.nested) throw new SyntaxError(`${key} is a mapping or a multi-line value`);
  const inline = withoutComment(raw.inline).trim();
  if (inline !== '') {
    if (raw.items.length > 0) throw new SyntaxError(`${key} has both a value and list items`);
    return inline.startsWith('[') ? inlineList(key, inline) : scalar(key, inline);
  }
  if (raw.items.length === 0) return null;
  const indent = raw.items[0]!.indent;
  return raw.items.map((item) => {
    if (item.indent !== indent) throw new SyntaxError(`${key} holds a nested list`);
    return requiredScalar(key, withoutComment(item.text).trim());
  });
}

function inlineList(key: string, text: string): string[] {
  if (!text.endsWith(']')) throw new SyntaxError(`${key} has an unclosed list`);
  const inner = text.slice(1, -1).trim();
  return inner === '' ? [] : splitFlowItems(inner).map((item) => requiredScalar(key, item.trim()));
}

function requiredScalar(key: string, text: string): string {
  const value = scalar(key, text);
  if (value === null) throw new SyntaxError(`${key} holds an empty list item`);
  return value;
}

function scalar(key: string, text: string): string | null {
  if (YAML_NULLS.has(text)) return null;
  if (text.startsWith('"')) {
    const value: unknown = JSON.parse(text);
    if (typeof value !== 'string') throw new SyntaxError(`${key} has a malformed quoted value`);
    return value;
  }
  if (text.startsWith("'")) {
    const inner = text.slice(1, -1);
    if (text.length < 2 || !text.endsWith("'") || inner.replace(/''/g, '').includes("'")) {
      throw new SyntaxError(`${key} has a malformed quoted value`);
    }
    return inner.replace(/''/g, "'");
  }
  if (YAML_INDICATORS.has(text[0]!) || text === '-' || text.startsWith('- ') || /:(\s|$)/.test(text)) {
    throw new SyntaxError(`${key} has a value this reader does not accept: ${text.slice(0, 60)}`);
  }
  return text;
}

/** Cuts a ` # comment`; a quote opens a quoted scalar only where a value or flow item starts. */
function withoutComment(text: string): string {
  let quote: string | undefined;
  let previous = '';
  for (let i = 0; i < text.length; i++) {
    const char = text[i]!;
    if (quote) {
      if (char === '\\' && quote === '"') i++;
      else if (char === quote) quote = undefined;
    } else if ((char === '"' || char === "'") && (previous === '' || previous === '[' || previous === ',')) {
      quote = char;
    } else if (char === '#' && (i === 0 || /\s/.test(text[i - 1]!))) {
      return text.slice(0, i);
    }
    if (!/\s/.test(char)) previous = char;
  }
  if (quote) throw new SyntaxError('unterminated quoted value');
  return text;
}

/** Splits `a, "b, c", 'd'` on the commas outside quotes. */
function splitFlowItems(inner: string): string[] {
  const items: string[] = [];
  let quote: string | undefined;
  let start = 0;
  let itemStart = true;
  for (let i = 0; i < inner.length; i++) {
    const char = inner[i]!;
    if (quote) {
      if (char === '\\' && quote === '"') i++;
      else if (char === quote) quote = undefined;
    } else if (char === ',') {
      items.push(inner.slice(start, i));
      start = i + 1;
      itemStart = true;
      continue;
    } else if ((char === '"' || char === "'") && itemStart) {
      quote = char;
    }
    if (!/\s/.test(char)) itemStart = false;
  }
  if (quote) throw new SyntaxError('unterminated quoted list item');
  items.push(inner.slice(start));
  return items;
}

// ---------------------------------------------------------------------------------------------
// The checkpoint's own metadata: safetensors __metadata__ (kohya, ModelSpec) or PyTorch entries

/** kohya sd-scripts: SHA-256 of the whole base file (`ss_sd_model_hash` is the older 8-digit webui hash). */
const BASE_FILE_HASH_KEY = 'ss_new_sd_model_hash';
const LEGACY_BASE_HASH_KEY = 'ss_sd_model_hash';
/** The stable-diffusion-webui legacy hash: SHA-256 of the 64 KiB at 1 MiB, first 8 hex digits. */
const LEGACY_HASH_OFFSET = 0x100000;
const LEGACY_HASH_LENGTH = 0x10000;
/** Keys naming the base model; `sshs_model_hash` is not one: kohya hashes the LoRA itself there. */
const BASE_NAME_KEYS = ['ss_sd_model_name', 'base_model'];
const MERGED_FROM_KEY = 'modelspec.merged_from';

async function metadataLinks(scan: Scan, entry: Entry): Promise<DeclaredLink[]> {
  const metadata = entry.metadata;
  const relation: Relation = isAdapterMetadata(metadata) ? 'adapter' : 'finetune';
  const declaration = (names: readonly string[], key: string, declared: Relation): Declaration => ({
    names,
    relation: declared,
    source: `${entry.relative} metadata ${key}`,
    directory: entry.directory,
    describesItsFolder: false,
  });
  const links: DeclaredLink[] = [];
  const byHash = await baseFileByHash(scan, entry, relation);
  if (byHash) links.push(byHash);
  for (const key of BASE_NAME_KEYS) {
    const name = nonEmptyString(metadata[key]);
    if (name === undefined || byHash?.parentName === name) continue;
    links.push(...resolveDeclaration(scan, entry, declaration([name], key, relation)));
  }
  const mergedFrom = nonEmptyString(metadata[MERGED_FROM_KEY])?.split(',').map((name) => name.trim()).filter((name) => name !== '');
  if (mergedFrom?.length) links.push(...resolveDeclaration(scan, entry, declaration(mergedFrom, MERGED_FROM_KEY, 'merged')));
  return links;
}

function isAdapterMetadata(metadata: Readonly<Record<string, unknown>>): boolean {
  const architecture = nonEmptyString(metadata['modelspec.architecture']);
  return nonEmptyString(metadata['ss_network_module']) !== undefined || (architecture !== undefined && /[-/]lora$/i.test(architecture));
}

interface HashClaim {
  readonly key: string;
  readonly digest: string;
  readonly compute: (scan: Scan, file: string) => Promise<string>;
  /** Smallest candidate the hash can tell apart (the legacy hash of a shorter file reads past its end). */
  readonly minimumBytes: number;
}

/**
 * A strong link when the metadata carries a base-file hash that some checkpoint of the folder
 * has. Files are hashed only here, only when such a hash is declared, and only those of a
 * plausible size; the name declared beside the hash is tried first.
 */
async function baseFileByHash(scan: Scan, entry: Entry, relation: Relation): Promise<DeclaredLink | undefined> {
  const claims = hashClaims(entry.metadata);
  if (claims.length === 0) return undefined;
  const declaredName = nonEmptyString(entry.metadata['ss_sd_model_name']);
  for (const claim of claims) {
    const base = await findByHash(scan, entry, claim, relation, declaredName);
    if (base) {
      return {
        child: entry.relative,
        parent: base.relative,
        parentName: declaredName ?? claim.digest,
        relation,
        source: `${entry.relative} metadata ${claim.key}`,
        strength: 'strong',
      };
    }
  }
  if (declaredName !== undefined) return undefined;
  const first = claims[0]!;
  return { child: entry.relative, parentName: first.digest, relation, source: `${entry.relative} metadata ${first.key}`, strength: 'weak' };
}

function hashClaims(metadata: Readonly<Record<string, unknown>>): HashClaim[] {
  const claims: HashClaim[] = [];
  // kohya writes "NOFILE" or "IsADirectory" when it could not hash the base: not a claim.
  const full = nonEmptyString(metadata[BASE_FILE_HASH_KEY])?.toLowerCase().replace(/^0x/, '');
  if (full && /^[0-9a-f]{64}$/.test(full)) claims.push({ key: BASE_FILE_HASH_KEY, digest: full, compute: sha256OfFile, minimumBytes: 1 });
  const legacy = nonEmptyString(metadata[LEGACY_BASE_HASH_KEY])?.toLowerCase();
  if (legacy && /^[0-9a-f]{8}$/.test(legacy)) {
    claims.push({ key: LEGACY_BASE_HASH_KEY, digest: legacy, compute: legacyWebuiHash, minimumBytes: LEGACY_HASH_OFFSET + LEGACY_HASH_LENGTH });
  }
  return claims;
}

async function findByHash(scan: Scan, child: Entry, claim: HashClaim, relation: Relation, declaredName: string | undefined): Promise<Entry | undefined> {
  const childSize = await fileSize(scan, child.absolute);
  if (childSize === undefined) return undefined;
  const others = scan.entries.filter((entry) => entry !== child);
  const named = declaredName === undefined ? [] : others.filter((entry) => namesEntry(entry, lastComponent(declaredName)));
  for (const candidate of new Set([...named, ...others])) {
    throwIfAborted(scan.signal);
    const size = await fileSize(scan, candidate.absolute);
    if (size === undefined || size < claim.minimumBytes || size > scan.maxHashBytes) continue;
    // An adapter is a small difference from its base: a base no larger than the adapter is implausible.
    if (relation === 'adapter' && size <= childSize) continue;
    if ((await digestOf(scan, candidate.absolute, claim)) === claim.digest) return candidate;
  }
  return undefined;
}

function fileSize(scan: Scan, file: string): Promise<number | undefined> {
  let size = scan.sizes.get(file);
  if (!size) {
    size = fs.stat(file).then((stats) => stats.size, () => undefined);
    scan.sizes.set(file, size);
  }
  return size;
}

function digestOf(scan: Scan, file: string, claim: HashClaim): Promise<string | undefined> {
  const key = `${claim.key}\0${file}`;
  let digest = scan.digests.get(key);
  if (!digest) {
    digest = claim.compute(scan, file).catch((error: unknown) => {
      throwIfAborted(scan.signal);
      scan.warn(`${relativeToFolder(scan, file)}: not hashed (${describeError(error)})`);
      return undefined;
    });
    scan.digests.set(key, digest);
  }
  return digest;
}

/** Streams the file in fixed chunks, so memory stays bounded whatever its size. */
async function sha256OfFile(scan: Scan, file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: HASH_CHUNK_BYTES, signal: scan.signal })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function legacyWebuiHash(_scan: Scan, file: string): Promise<string> {
  const handle = await fs.open(file, 'r');
  try {
    const buffer = Buffer.alloc(LEGACY_HASH_LENGTH);
    const { bytesRead } = await handle.read(buffer, 0, LEGACY_HASH_LENGTH, LEGACY_HASH_OFFSET);
    return createHash('sha256').update(buffer.subarray(0, bytesRead)).digest('hex').slice(0, 8);
  } finally {
    await handle.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Resolving declared names to checkpoints of the folder

function resolveDeclaration(scan: Scan, child: Entry, declaration: Declaration): DeclaredLink[] {
  const links: DeclaredLink[] = [];
  for (const name of declaration.names) {
    const parent = resolveName(scan, name, declaration.directory);
    if (namesItself(child, declaration, name, parent)) continue;
    links.push({
      child: child.relative,
      ...(parent && { parent: parent.relative }),
      parentName: name,
      relation: declaration.relation,
      source: declaration.source,
      strength: 'weak',
    });
  }
  return links;
}

/** A config naming its own folder records where the model was loaded from, not a parent. */
function namesItself(child: Entry, declaration: Declaration, name: string, parent: Entry | undefined): boolean {
  if (parent === child) return true;
  if (!declaration.describesItsFolder) return false;
  const ownFolders = [child.directory, declaration.directory];
  if (parent) return ownFolders.includes(parent.directory);
  const last = lastComponent(name);
  return ownFolders.some((folder) => path.basename(folder).toLowerCase() === last);
}

/** A path (to a file or a model folder), else a hub id or file name matched by its last component. */
function resolveName(scan: Scan, name: string, directory: string): Entry | undefined {
  const places = path.isAbsolute(name) ? [name] : [path.resolve(directory, name), path.resolve(scan.folder, name)];
  for (const place of places) {
    const found = scan.byPath.get(place) ?? representative(scan.byDirectory.get(place));
    if (found) return found;
  }
  return byLastComponent(scan, name);
}

function byLastComponent(scan: Scan, name: string): Entry | undefined {
  const last = lastComponent(name);
  if (last === '') return undefined;
  const matches = new Set<Entry>();
  for (const entry of scan.entries) if (namesEntry(entry, last)) matches.add(entry);
  for (const [directory, entries] of scan.byDirectory) {
    const found = directory !== scan.folder && path.basename(directory).toLowerCase() === last ? representative(entries) : undefined;
    if (found) matches.add(found);
  }
  if (matches.size > 1) scan.warn(`"${name}" matches ${matches.size} checkpoints (${[...matches].map((entry) => entry.relative).join(', ')}); left unresolved`);
  return matches.size === 1 ? [...matches][0] : undefined;
}

/** Last component of a path or hub id, lower-cased; either slash separates. */
function lastComponent(name: string): string {
  return (name.split(/[\\/]/).filter((part) => part !== '').pop() ?? '').toLowerCase();
}

/** The file's name equals `last`, with or without its extension. */
function namesEntry(entry: Entry, last: string): boolean {
  const base = path.basename(entry.absolute).toLowerCase();
  return base === last || base.slice(0, base.length - path.extname(base).length) === last;
}

/** The model weights of a folder holding several checkpoint files. */
function representative(entries: readonly Entry[] | undefined): Entry | undefined {
  if (!entries) return undefined;
  const models = entries.filter((entry) => !TRAINER_SIDE_FILE.test(path.basename(entry.absolute)));
  for (const name of PREFERRED_WEIGHT_FILES) {
    const preferred = models.find((entry) => path.basename(entry.absolute) === name);
    if (preferred) return preferred;
  }
  return [...models].sort((a, b) => a.absolute.localeCompare(b.absolute))[0];
}

// ---------------------------------------------------------------------------------------------
// Checkpoints of one run: Trainer checkpoint-N folders, numbered file names

interface ChainMember {
  readonly entry: Entry;
  /** Why this member follows the one before it. */
  readonly source: string;
}

interface RunMember extends ChainMember {
  readonly step: number;
}

/**
 * Hugging Face Trainer writes run/checkpoint-N/... every few steps, and the final model to
 * run/... with run/trainer_state.json: the same file under each checkpoint folder is one chain.
 */
async function trainerRunLinks(scan: Scan): Promise<DeclaredLink[]> {
  const runs = new Map<string, { runDirectory: string; inner: string; members: RunMember[] }>();
  for (const entry of scan.entries) {
    if (TRAINER_SIDE_FILE.test(path.basename(entry.absolute))) continue;
    const place = trainerCheckpointPlace(scan, entry);
    if (!place) continue;
    const key = `${place.runDirectory}\0${place.inner}`;
    const run = runs.get(key) ?? { runDirectory: place.runDirectory, inner: place.inner, members: [] };
    run.members.push({ entry, step: place.step, source: await stepSource(scan, place.stepDirectory, place.step) });
    runs.set(key, run);
  }
  const links: DeclaredLink[] = [];
  for (const run of runs.values()) {
    const members = run.members.sort((a, b) => a.step - b.step);
    const final = await finalModel(scan, run.runDirectory, run.inner, members.at(-1)!.step);
    links.push(...chain(final ? [...members, final] : members, 'strong'));
  }
  return links;
}

/** Where an entry lies in a Trainer output: run/checkpoint-N/inner. */
function trainerCheckpointPlace(scan: Scan, entry: Entry): { runDirectory: string; stepDirectory: string; inner: string; step: number } | undefined {
  const parts = entry.relative.split(path.sep);
  for (let i = parts.length - 2; i >= 0; i--) {
    const match = TRAINER_CHECKPOINT_FOLDER.exec(parts[i]!);
    if (!match) continue;
    return {
      runDirectory: path.join(scan.folder, ...parts.slice(0, i)),
      stepDirectory: path.join(scan.folder, ...parts.slice(0, i + 1)),
      inner: path.join(...parts.slice(i + 1)),
      step: Number(match[1]),
    };
  }
  return undefined;
}

async function stepSource(scan: Scan, stepDirectory: string, step: number): Promise<string> {
  const folderName = `${relativeToFolder(scan, stepDirectory)} folder name`;
  const globalStep = await trainerGlobalStep(scan, stepDirectory);
  if (globalStep === undefined) return folderName;
  if (globalStep !== step) {
    scan.warn(`${relativeToFolder(scan, path.join(stepDirectory, 'trainer_state.json'))}: global_step ${globalStep} differs from the folder's step ${step}`);
    return folderName;
  }
  return `${relativeToFolder(scan, path.join(stepDirectory, 'trainer_state.json'))} global_step`;
}

/** The run's final model, when trainer_state.json beside it says training went at least as far as the last checkpoint. */
async function finalModel(scan: Scan, runDirectory: string, inner: string, lastStep: number): Promise<RunMember | undefined> {
  const entry = scan.byPath.get(path.join(runDirectory, inner));
  const globalStep = entry && (await trainerGlobalStep(scan, runDirectory));
  if (!entry || globalStep === undefined || globalStep < lastStep) return undefined;
  return { entry, step: globalStep, source: `${relativeToFolder(scan, path.join(runDirectory, 'trainer_state.json'))} global_step` };
}

async function trainerGlobalStep(scan: Scan, directory: string): Promise<number | undefined> {
  const file = path.join(directory, 'trainer_state.json');
  const text = await readSmallFile(scan, file);
  if (text === undefined) return undefined;
  try {
    const step = parseJsonObject(text)['global_step'];
    if (typeof step === 'number' && Number.isInteger(step) && step >= 0) return step;
    scan.warn(`${relativeToFolder(scan, file)}: ignored (no global_step)`);
  } catch (error) {
    scan.warn(`${relativeToFolder(scan, file)}: ignored (${describeError(error)})`);
  }
  return undefined;
}

/** A number in a file name, or a size such as 7b or 350m, which names a model rather than a step. */
const NUMBER_OR_SIZE = /(\d+)([bkmgtBKMGT](?![A-Za-z]))?/g;
/** A step or epoch label just before the number makes the order a strong claim. */
const STEP_LABEL = /(step|epoch|iter|iteration|ckpt|checkpoint)s?[=_-]?$/i;

interface NumberedName {
  readonly entry: Entry;
  /** The name with each step-like number replaced by '#'. */
  readonly pattern: string;
  readonly numbers: readonly number[];
  readonly labelled: readonly boolean[];
}

/** Files of one folder named alike but for their numbers (epoch=1.ckpt, epoch=2.ckpt) chain in numeric order. */
function numberedFileLinks(scan: Scan): DeclaredLink[] {
  const groups = new Map<string, NumberedName[]>();
  for (const entry of scan.entries) {
    const numbered = numberedName(entry);
    if (!numbered) continue;
    const key = `${entry.directory}\0${numbered.pattern}`;
    groups.set(key, [...(groups.get(key) ?? []), numbered]);
  }
  const links: DeclaredLink[] = [];
  for (const group of groups.values()) {
    if (group.length < 2) continue;
    for (const run of numberedRuns(group)) {
      const members = run.names.map((name) => ({ entry: name.entry, source: `${name.entry.relative} file name (${name.pattern})` }));
      links.push(...chain(members, run.labelled ? 'strong' : 'weak'));
    }
  }
  return links;
}

function numberedName(entry: Entry): NumberedName | undefined {
  const name = path.basename(entry.absolute);
  if (TRAINER_SIDE_FILE.test(name) || SHARD_NAME.test(name)) return undefined;
  const numbers: number[] = [];
  const labelled: boolean[] = [];
  const pattern = name.replace(NUMBER_OR_SIZE, (match: string, digits: string, size: string | undefined, offset: number) => {
    if (size) return match;
    numbers.push(Number(digits));
    labelled.push(STEP_LABEL.test(name.slice(0, offset)));
    return '#';
  });
  return numbers.length === 0 ? undefined : { entry, pattern, numbers, labelled };
}

/**
 * Orders a group by its numbers. When every number rises along that order (epoch=0-step=100,
 * epoch=1-step=200) the group is one run; otherwise (run1_step100, run2_step100) the last
 * changing number is the step and the other numbers tell the runs apart.
 */
function numberedRuns(group: readonly NumberedName[]): { names: NumberedName[]; labelled: boolean }[] {
  const sorted = [...group].sort((a, b) => compareNumbers(a.numbers, b.numbers));
  const width = sorted[0]!.numbers.length;
  const changing = [...Array(width).keys()].filter((i) => new Set(sorted.map((name) => name.numbers[i])).size > 1);
  if (changing.length === 0) return [];
  const rising = sorted.every((name, k) => k === 0 || risesFrom(sorted[k - 1]!.numbers, name.numbers));
  if (rising) return [{ names: sorted, labelled: changing.some((i) => sorted[0]!.labelled[i]) }];
  const step = changing.at(-1)!;
  const runs = new Map<string, NumberedName[]>();
  for (const name of sorted) {
    const key = name.numbers.filter((_, i) => i !== step).join(',');
    runs.set(key, [...(runs.get(key) ?? []), name]);
  }
  return [...runs.values()].filter((names) => names.length > 1).map((names) => ({ names, labelled: names[0]!.labelled[step]! }));
}

/** Every number is at least the earlier one's, and some number is larger. */
function risesFrom(earlier: readonly number[], later: readonly number[]): boolean {
  return compareNumbers(earlier, later) < 0 && later.every((value, i) => value >= earlier[i]!);
}

function compareNumbers(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/** Each member fine-tuned from the one before it. */
function chain(members: readonly ChainMember[], strength: DeclaredLink['strength']): DeclaredLink[] {
  return members.slice(1).map((member, i) => ({
    child: member.entry.relative,
    parent: members[i]!.entry.relative,
    parentName: members[i]!.entry.relative,
    relation: 'run',
    source: member.source,
    strength,
  }));
}

// ---------------------------------------------------------------------------------------------

/** One link per child and parent: sources joined, the strongest strength and the most specific relation kept. */
function mergeDuplicates(links: readonly DeclaredLink[]): DeclaredLink[] {
  const merged = new Map<string, DeclaredLink>();
  for (const link of links) {
    const key = `${link.child}\0${link.parent ?? `name:${link.parentName.toLowerCase()}`}`;
    const earlier = merged.get(key);
    if (!earlier) {
      merged.set(key, link);
      continue;
    }
    merged.set(key, {
      ...earlier,
      relation: earlier.relation === 'finetune' || earlier.relation === 'unknown' ? link.relation : earlier.relation,
      source: `${earlier.source}; ${link.source}`,
      strength: earlier.strength === 'strong' || link.strength === 'strong' ? 'strong' : 'weak',
    });
  }
  return [...merged.values()];
}

function relativeToFolder(scan: Scan, file: string): string {
  return path.relative(scan.folder, file) || '.';
}

// ---------------------------------------------------------------------------------------------
// Declared against detected

/**
 * Declared parents the weights disagree with: unrelated weights, a different detected parent,
 * or the declared parent found below the child. A declared parent that the detected edges make
 * an ancestor (a run's base named in every checkpoint's config) agrees with them. Merges have
 * several parents, of which the weights may pick one, so only relatedness is checked for them.
 */
export function conflicts(
  declared: readonly DeclaredLink[],
  edges: readonly { parent: string; child: string }[],
  related: (a: string, b: string) => boolean,
): LineageConflict[] {
  const parentsOf = new Map<string, string[]>();
  for (const edge of edges) parentsOf.set(edge.child, [...(parentsOf.get(edge.child) ?? []), edge.parent]);
  const found: LineageConflict[] = [];
  for (const link of declared) {
    if (link.parent === undefined) continue;
    const detected = parentsOf.get(link.child) ?? [];
    const message = conflictMessage({ ...link, parent: link.parent }, detected, parentsOf, related);
    if (message === undefined) continue;
    found.push({ child: link.child, declaredParent: link.parent, ...(detected[0] !== undefined && { detectedParent: detected[0] }), message });
  }
  return found;
}

function conflictMessage(
  link: DeclaredLink & { readonly parent: string },
  detected: readonly string[],
  parentsOf: ReadonlyMap<string, readonly string[]>,
  related: (a: string, b: string) => boolean,
): string | undefined {
  const claim = `${link.child} declares ${link.parent} as its parent (${link.source})`;
  if (!related(link.child, link.parent)) return `${claim}, but their weights are unrelated`;
  if (link.relation === 'merged' || detected.includes(link.parent) || ancestors(link.child, parentsOf).has(link.parent)) return undefined;
  if (ancestors(link.parent, parentsOf).has(link.child)) return `${claim}, but the weights place ${link.parent} below it`;
  return detected.length > 0 ? `${claim}, but the weights point to ${detected.join(' and ')}` : undefined;
}

function ancestors(node: string, parentsOf: ReadonlyMap<string, readonly string[]>): Set<string> {
  const seen = new Set<string>();
  const pending = [...(parentsOf.get(node) ?? [])];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    if (seen.has(next)) continue;
    seen.add(next);
    pending.push(...(parentsOf.get(next) ?? []));
  }
  return seen;
}
