/**
 * `npm run bench`: lineage accuracy and cost on the model zoo trained by test/zoo/make_zoo.py,
 * next to a naive baseline (full-weight L2 to every candidate, re-reading both files per pair).
 * Prints figures; it asserts nothing (tests check behaviour).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { FingerprintCache } from '../../server/src/engine/fingerprint/cache';
import type { Fingerprint } from '../../server/src/engine/fingerprint/fingerprint';
import { normalisedNames } from '../../server/src/engine/fingerprint/tensorNames';
import { openCheckpoint } from '../../server/src/engine/formats/index';
import { rankParents } from '../../server/src/engine/lineage/parent';
import { readDeclaredLineage } from '../../server/src/engine/lineage/declared';
import { lineageOf, findCheckpoints } from '../../server/src/engine/lineage/scan';
import { makeTempDir } from '../helpers';
import { benchMethods } from './methodsBench';
import { engineRelation, readZoo } from './zooTruth';

const zooDir = process.argv[2] ?? '.cache/zoo/full';

async function main(): Promise<void> {
  const { truth, modelsDir } = readZoo(zooDir);
  console.log(`Neural Lineage benchmark on ${zooDir} (preset ${truth.preset}: ${truth.models.length} checkpoints)\n`);

  // Fingerprinting cost against a plain read of the same bytes.
  const files = await findCheckpoints(modelsDir);
  const bytes = (await Promise.all(files.map((file) => fs.stat(file)))).reduce((sum, stat) => sum + stat.size, 0);
  let started = performance.now();
  for (const file of files) await fs.readFile(file);
  const plainSeconds = (performance.now() - started) / 1000;
  const temp = makeTempDir();
  const cache = new FingerprintCache(temp.dir);
  const rssBefore = process.memoryUsage().rss;
  let peakRss = rssBefore;
  started = performance.now();
  const prints = new Map<string, Fingerprint>();
  for (const file of files) {
    const relative = path.relative(modelsDir, file);
    prints.set(relative, { ...(await cache.get(file)), path: relative });
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }
  const fingerprintSeconds = (performance.now() - started) / 1000;
  started = performance.now();
  const declared = await readDeclaredLineage(modelsDir, [...prints.values()]);
  const { edges } = lineageOf([...prints.values()], { declared });
  const lineageSeconds = (performance.now() - started) / 1000;
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
  const megabytes = bytes / 1048576;
  console.log('Scan cost');
  console.log(`  ${files.length} files, ${megabytes.toFixed(1)} MB`);
  console.log(`  plain read:        ${plainSeconds.toFixed(2)} s (${(megabytes / plainSeconds).toFixed(0)} MB/s)`);
  console.log(`  fingerprinting:    ${fingerprintSeconds.toFixed(2)} s (${(megabytes / fingerprintSeconds).toFixed(0)} MB/s)`);
  console.log(`  lineage graph:     ${lineageSeconds.toFixed(2)} s from fingerprints`);
  console.log(`  peak RSS:          ${(peakRss / 1048576).toFixed(0)} MB\n`);

  // Closed-set parent queries, by setting.
  const bySetting = new Map<string, { ours: number; naive: number; total: number }>();
  let naiveSeconds = 0;
  let oursSeconds = 0;
  for (const query of truth.queries) {
    const child = prints.get(query.query)!;
    const candidates = query.candidates.map((candidate) => prints.get(candidate.path)!);
    started = performance.now();
    const answer = rankParents(child, candidates);
    oursSeconds += (performance.now() - started) / 1000;
    started = performance.now();
    const naive = await nearestByFullL2(path.join(modelsDir, query.query), query.candidates.map((c) => path.join(modelsDir, c.path)));
    naiveSeconds += (performance.now() - started) / 1000;
    const row = bySetting.get(query.setting) ?? { ours: 0, naive: 0, total: 0 };
    row.total++;
    if (answer.parent?.fingerprint.path === query.true_parent) row.ours++;
    if (naive === path.join(modelsDir, query.true_parent)) row.naive++;
    bySetting.set(query.setting, row);
  }
  console.log('Closed-set parent accuracy (top-1), ours vs naive full-weight L2');
  const all = { ours: 0, naive: 0, total: 0 };
  for (const [setting, row] of [...bySetting].sort()) {
    console.log(`  ${setting.padEnd(14)} ${pct(row.ours, row.total)}  vs ${pct(row.naive, row.total)}   (${row.total} queries)`);
    all.ours += row.ours;
    all.naive += row.naive;
    all.total += row.total;
  }
  console.log(`  ${'all'.padEnd(14)} ${pct(all.ours, all.total)}  vs ${pct(all.naive, all.total)}   (${all.total} queries)`);
  console.log(`  time per query: ours ${(1000 * oursSeconds / all.total).toFixed(1)} ms from fingerprints, naive ${(1000 * naiveSeconds / all.total).toFixed(0)} ms re-reading files\n`);

  // The paper's cross-generation table: find the generation-k ancestor among all generation-k models.
  // The paper's generations are fine-tunes; derived copies (conversions, adapters, 16-bit and
  // quantized copies) are typed and measured in the tree section instead.
  const relationOf = new Map(truth.models.map((model) => [model.path, model.relation]));
  const generations = truth.cross_generation.filter((entry) => ['finetune', 'run'].includes(relationOf.get(entry.descendant) ?? ''));
  const cells = new Map<string, { ours: number; total: number }>();
  for (const entry of generations) {
    const key = `G${entry.ancestor_generation}→G${entry.descendant_generation}`;
    const answer = rankParents(prints.get(entry.descendant)!, entry.candidates.map((candidate) => prints.get(candidate)!));
    const cell = cells.get(key) ?? { ours: 0, total: 0 };
    cell.total++;
    if (answer.parent?.fingerprint.path === entry.true_ancestor) cell.ours++;
    cells.set(key, cell);
  }
  console.log(`Cross-generation ancestor accuracy (top-1) over ${generations.length} fine-tuned descendants, weights method   [paper, l1 with approximation / learned detector]`);
  const paper: Record<string, string> = {
    'G1→G2': '98.92 / 99.11', 'G1→G3': '97.02 / 98.81', 'G1→G4': '96.83 / 97.75',
    'G2→G3': '98.41 / 99.61', 'G2→G4': '95.24 / 98.38', 'G3→G4': '97.02 / 98.41',
  };
  for (const [key, cell] of [...cells].sort()) console.log(`  ${key}  ${pct(cell.ours, cell.total)}  (${cell.total})   [${paper[key] ?? '—'}]`);

  // Whole-tree recovery: every true link (merges have several), typed.
  const truthEdges = truth.models.flatMap((model) => model.parents.map((parent) => ({ parent, child: model.path, relation: engineRelation(model.relation) ?? 'finetune' })));
  const key = (parent: string, child: string) => `${parent} -> ${child}`;
  const undirected = (a: string, b: string) => [a, b].sort().join(' -- ');
  const trueDirected = new Map(truthEdges.map((link) => [key(link.parent, link.child), link]));
  const trueUndirected = new Map(truthEdges.map((link) => [undirected(link.parent, link.child), link]));
  const familyOf = new Map(truth.models.map((model) => [model.path, model.family]));
  const directed = edges.filter((edge) => trueDirected.has(key(edge.parent, edge.child))).length;
  const anyDirection = edges.filter((edge) => trueUndirected.has(undirected(edge.parent, edge.child))).length;
  const crossFamily = edges.filter((edge) => familyOf.get(edge.parent) !== familyOf.get(edge.child));
  console.log('\nWhole-tree recovery (scan, with declared metadata)');
  console.log(`  edges found ${edges.length}, true links ${truthEdges.length}`);
  console.log(`  undirected: precision ${pct(anyDirection, edges.length)}, recall ${pct(anyDirection, truthEdges.length)}`);
  console.log(`  directed:   precision ${pct(directed, edges.length)}, recall ${pct(directed, truthEdges.length)}`);
  console.log(`  right direction among correctly placed edges: ${pct(directed, anyDirection)}`);
  console.log(`  edges between unrelated families: ${crossFamily.length}` +
    (crossFamily.length ? ` (${crossFamily.map((edge) => `${edge.relation} ${(100 * edge.confidence).toFixed(0)}%`).join(', ')})` : ''));
  // Converted copies are aliases: either direction is right.
  console.log('  by relation: links found with the right direction, and typed right among those');
  const relations = [...new Set(truthEdges.map((link) => link.relation))].sort();
  let typedRight = 0;
  let placed = 0;
  for (const relation of relations) {
    const links = truthEdges.filter((link) => link.relation === relation);
    const found = links.flatMap((link) => {
      const edge = edges.find((candidate) =>
        relation === 'converted' ? undirected(candidate.parent, candidate.child) === undirected(link.parent, link.child) : candidate.parent === link.parent && candidate.child === link.child,
      );
      return edge ? [edge] : [];
    });
    const right = found.filter((edge) => edge.relation === relation).length;
    typedRight += right;
    placed += found.length;
    console.log(`    ${relation.padEnd(10)} found ${pct(found.length, links.length)} (${found.length}/${links.length}), typed right ${pct(right, found.length)}`);
  }
  console.log(`    ${'all'.padEnd(10)} typed right on found links: ${pct(typedRight, placed)}`);
  await benchMethods(truth, modelsDir, prints, path.join(zooDir, 'probe.npy'));
  temp.cleanup();
}

/** The naive baseline: full weights of every shared tensor, read again for each pair. */
async function nearestByFullL2(child: string, candidates: readonly string[]): Promise<string | undefined> {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const a = await readAll(child);
    const b = await readAll(candidate);
    let squared = 0;
    let shared = 0;
    for (const [name, values] of a) {
      const other = b.get(name);
      if (!other || other.length !== values.length) continue;
      shared++;
      for (let i = 0; i < values.length; i++) squared += (values[i]! - other[i]!) ** 2;
    }
    if (shared > 0 && squared < bestDistance) {
      bestDistance = squared;
      best = candidate;
    }
  }
  return best;
}

async function readAll(file: string): Promise<Map<string, Float64Array>> {
  const checkpoint = await openCheckpoint(file);
  try {
    const names = normalisedNames(checkpoint.tensors.map((tensor) => tensor.name));
    const values = new Map<string, Float64Array>();
    for (const [i, tensor] of checkpoint.tensors.entries()) {
      if (tensor.dtype.startsWith('F') || tensor.dtype === 'BF16') values.set(names[i]!, await tensor.read());
    }
    return values;
  } finally {
    await checkpoint.close();
  }
}

function pct(part: number, total: number): string {
  return total === 0 ? '   —  ' : `${((100 * part) / total).toFixed(2).padStart(6)}%`;
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
