import * as path from 'node:path';
import { isCheckpointPath } from './engine/formats/index';

/**
 * Finds the checkpoint path under a cursor in any kind of text: Python strings, YAML/TOML
 * values, JSON, Markdown links, shell lines. Quoted strings win; otherwise the run of
 * path-like characters around the cursor is taken.
 */
export interface PathAtPosition {
  readonly text: string;
  readonly start: number;
  readonly end: number;
}

const QUOTED = /(["'`])((?:(?!\1).)+?)\1/g;
const PATH_CHARS = /[\w.\-/\\~:@+%]/;

export function checkpointPathAt(line: string, character: number): PathAtPosition | undefined {
  for (const match of line.matchAll(QUOTED)) {
    const start = match.index! + 1;
    const end = start + match[2]!.length;
    if (character >= start && character <= end) {
      return isCheckpointPath(match[2]!) ? { text: match[2]!, start, end } : undefined;
    }
  }
  let start = character;
  let end = character;
  while (start > 0 && PATH_CHARS.test(line[start - 1]!)) start--;
  while (end < line.length && PATH_CHARS.test(line[end]!)) end++;
  // Markdown links and prose end a path at a closing bracket or a sentence's full stop.
  const text = line.slice(start, end).replace(/[.:,]+$/, '');
  if (!text || !isCheckpointPath(text)) return undefined;
  return { text, start, end: start + text.length };
}

/** Candidate files for a path as written: absolute, then relative to the document, then to each workspace folder. */
export function resolveCandidates(written: string, documentDir: string | undefined, workspaceFolders: readonly string[]): string[] {
  const expanded = written.startsWith('~/') ? path.join(process.env.HOME ?? '~', written.slice(2)) : written;
  if (path.isAbsolute(expanded)) return [path.normalize(expanded)];
  const bases = [...(documentDir ? [documentDir] : []), ...workspaceFolders];
  return [...new Set(bases.map((base) => path.resolve(base, expanded)))];
}
