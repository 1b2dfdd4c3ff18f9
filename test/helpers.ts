import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

/** Tests run from out/test/…; fixtures and scripts are found from the repository root. */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');

export function fixturePath(...parts: string[]): string {
  return path.join(REPO_ROOT, 'test', 'fixtures', ...parts);
}

/** A fresh temporary folder, removed by the returned cleanup. */
export function makeTempDir(prefix = 'neural-lineage-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
