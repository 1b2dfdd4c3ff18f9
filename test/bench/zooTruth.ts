import { readFileSync } from 'node:fs';
import * as path from 'node:path';

/** The parts of a zoo's truth.json (written by test/zoo/make_zoo.py) that tests and benchmarks read. */
export interface ZooModel {
  readonly path: string;
  readonly id: string;
  readonly architecture: string;
  readonly family: string;
  readonly generation: number;
  readonly parent: string | null;
  /** Every parent: one for most models, two or three for merges, none for roots. */
  readonly parents: readonly string[];
  readonly relation: string | null;
  readonly setting: string;
  readonly format: string;
}

/** The zoo calls a merged LoRA "lowrank-merge"; the engine types it as an adapter relation. */
export function engineRelation(relation: string | null): string | null {
  return relation === 'lowrank-merge' ? 'adapter' : relation;
}

export interface ZooQuery {
  readonly query: string;
  readonly true_parent: string;
  readonly setting: string;
  readonly candidates: readonly { path: string; kind: string }[];
}

export interface ZooCrossGeneration {
  readonly ancestor_generation: number;
  readonly descendant_generation: number;
  readonly descendant: string;
  readonly true_ancestor: string;
  readonly candidates: readonly string[];
}

export interface ZooTruth {
  readonly preset: string;
  readonly models: readonly ZooModel[];
  readonly queries: readonly ZooQuery[];
  readonly cross_generation: readonly ZooCrossGeneration[];
}

export function readZoo(zooDir: string): { truth: ZooTruth; modelsDir: string } {
  const truth = JSON.parse(readFileSync(path.join(zooDir, 'truth.json'), 'utf8')) as ZooTruth;
  return { truth, modelsDir: path.join(zooDir, 'models') };
}
