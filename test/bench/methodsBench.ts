/**
 * The paper's comparison, every method as a column: direct l1 and CKA, both with the
 * fine-tuning approximation, the learned detector, our weight method and auto, on the
 * cross-generation table (G1→G2 … G3→G4) and on the closed-set settings (ordinary, few-shot,
 * imbalanced) as rows, with time and memory per comparison. α is chosen by validation: on the
 * closed-set queries of families with an even index, then the table reports the others' rows
 * and the whole cross-generation table with that α. The slope of the approximation does not
 * depend on α, so every α costs one set of forward passes.
 */
import * as path from 'node:path';
import type { Fingerprint } from '../../server/src/engine/fingerprint/fingerprint';
import { openCheckpoint } from '../../server/src/engine/formats/index';
import { loadDetector, type LineageDetector } from '../../server/src/engine/detector/detector';
import { detectorFiles, findParent, matrixPairs } from '../../server/src/engine/lineage/parentQuery';
import { recogniseArchitecture } from '../../server/src/engine/repr/architecture';
import type { FeatureMatrix, FeatureModel } from '../../server/src/engine/repr/featureModel';
import { loadProbe, type Probe } from '../../server/src/engine/repr/probe';
import { scoreCandidates } from '../../server/src/engine/repr/representation';
import { loadParameters, openStateDictFeatureModel } from '../../server/src/engine/repr/stateDictModel';
import type { ZooTruth } from './zooTruth';

const ALPHAS = [0.01, 0.02, 0.05, 0.1, 0.2];
const METHOD_COLUMNS = ['l1', 'cka', 'l1+approx', 'cka+approx', 'detector', 'weights', 'auto'] as const;
type Column = (typeof METHOD_COLUMNS)[number];

interface Question {
  readonly row: string;
  readonly child: string;
  readonly truth: string;
  readonly candidates: readonly string[];
  /** Used to choose α, not reported. */
  readonly validation: boolean;
}

/** What each method says for one question: per candidate a score (higher = parent). */
interface Answers {
  readonly direct: Record<'l1' | 'cka', number[]>;
  readonly slope: Record<'l1' | 'cka', number[]>;
  readonly detector: number[];
  readonly weights: string | null;
  readonly auto: string | null;
}

interface Loaded {
  readonly model: FeatureModel;
  readonly values: Map<string, Float32Array>;
}

export async function benchMethods(truth: ZooTruth, modelsDir: string, prints: ReadonlyMap<string, Fingerprint>, probePath: string): Promise<void> {
  const familyIndex = new Map([...new Set(truth.models.map((model) => model.family))].map((family, i) => [family, i]));
  const modelOf = new Map(truth.models.map((model) => [model.path, model]));
  const fineTuned = (file: string) => ['finetune', 'run'].includes(modelOf.get(file)?.relation ?? '');
  const questions: Question[] = [
    ...truth.queries
      .filter((query) => fineTuned(query.query))
      .map((query) => ({
        row: query.setting,
        child: query.query,
        truth: query.true_parent,
        candidates: query.candidates.map((candidate) => candidate.path),
        validation: familyIndex.get(modelOf.get(query.query)!.family)! % 2 === 0,
      })),
    ...truth.cross_generation
      .filter((entry) => fineTuned(entry.descendant))
      .map((entry) => ({
        row: `G${entry.ancestor_generation}→G${entry.descendant_generation}`,
        child: entry.descendant,
        truth: entry.true_ancestor,
        candidates: entry.candidates,
        validation: false,
      })),
  ];

  const models = new Map<string, FeatureModel>();
  const loaded = new Map<string, Loaded>();
  const load = async (file: string): Promise<Loaded> => {
    let entry = loaded.get(file);
    if (!entry) {
      const checkpoint = await openCheckpoint(path.join(modelsDir, file));
      try {
        const recognition = recogniseArchitecture(checkpoint.tensors);
        if ('reason' in recognition) throw new Error(`${file}: ${recognition.reason}`);
        const key = JSON.stringify(recognition.architecture);
        let model = models.get(key);
        if (!model) {
          model = await openStateDictFeatureModel(recognition.architecture);
          models.set(key, model);
        }
        entry = { model, values: await loadParameters(checkpoint, model) };
        loaded.set(file, entry);
      } finally {
        await checkpoint.close();
      }
    }
    return entry;
  };
  const probes = new Map<FeatureModel, Probe>();
  const probeOf = async (model: FeatureModel) => {
    let probe = probes.get(model);
    if (!probe) {
      probe = await loadProbe(probePath, model.inputShape, { rows: 64 });
      probes.set(model, probe);
    }
    return probe;
  };
  const { onnx, json } = detectorFiles();
  const detector: LineageDetector = await loadDetector(onnx, json);

  const seconds: Record<'repr' | 'detector' | 'weights', number> = { repr: 0, detector: 0, weights: 0 };
  let comparisons = 0;
  const rssBefore = process.memoryUsage().rss;
  let peakRss = rssBefore;
  const answers: Answers[] = [];
  for (const question of questions) {
    const child = await load(question.child);
    const probe = await probeOf(child.model);
    const candidates = await Promise.all(question.candidates.map(load));
    // Candidates of another architecture than the child cannot be its parent; they score −∞.
    const usable = candidates.map((candidate) => candidate.model === child.model);
    const values = candidates.filter((_, i) => usable[i]).map((candidate) => candidate.values);
    let started = performance.now();
    const direct = { l1: [] as number[], cka: [] as number[] };
    const slope = { l1: [] as number[], cka: [] as number[] };
    for (const metric of ['l1', 'cka'] as const) {
      const scores = await scoreCandidates(child.model, probe, child.values, values, { metric, approximation: true });
      direct[metric] = spread(usable, scores.map((score) => score.direct));
      slope[metric] = spread(usable, scores.map((score) => score.slope ?? 0));
    }
    seconds.repr += (performance.now() - started) / 1000;
    started = performance.now();
    const childFeatures = await child.model.features(probe.values, probe.rows, child.values);
    const inputs = [];
    for (const candidate of values) {
      inputs.push({ weights: matrixPairs(child.model, candidate, child.values), features: { parent: await child.model.features(probe.values, probe.rows, candidate), child: childFeatures } as { parent: FeatureMatrix; child: FeatureMatrix } });
    }
    const detected = spread(usable, (await detector.score(inputs)).scores);
    seconds.detector += (performance.now() - started) / 1000;
    started = performance.now();
    // The exact pass and the model-running methods read the files: absolute paths.
    const located = (file: string): Fingerprint => ({ ...prints.get(file)!, path: path.join(modelsDir, file) });
    const relative = (file: string | null) => file && path.relative(modelsDir, file);
    const childPrint = located(question.child);
    const candidatePrints = question.candidates.map(located);
    const weights = await findParent(childPrint, candidatePrints, { method: 'weights' });
    seconds.weights += (performance.now() - started) / 1000;
    const auto = await findParent(childPrint, candidatePrints, { method: 'auto', probe: probePath });
    answers.push({ direct, slope, detector: detected, weights: relative(weights.parent), auto: relative(auto.parent) });
    comparisons += question.candidates.length;
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }
  await detector.dispose();
  for (const model of models.values()) await model.dispose();

  const argmax = (scores: readonly number[]) => scores.reduce((best, score, i) => (score > scores[best]! ? i : best), 0);
  const pick = (question: Question, scores: readonly number[]) => question.candidates[argmax(scores)];
  const withAlpha = (answer: Answers, metric: 'l1' | 'cka', alpha: number) => answer.direct[metric].map((score, i) => score + alpha * answer.slope[metric][i]!);
  const chooseAlpha = (metric: 'l1' | 'cka') => {
    let best = { alpha: ALPHAS[0]!, right: -1 };
    for (const alpha of ALPHAS) {
      const right = questions.filter((question, q) => question.validation && pick(question, withAlpha(answers[q]!, metric, alpha)) === question.truth).length;
      if (right > best.right) best = { alpha, right };
    }
    return best.alpha;
  };
  const alpha = { l1: chooseAlpha('l1'), cka: chooseAlpha('cka') };
  const chosen = (question: Question, q: number, column: Column): string | null | undefined => {
    const answer = answers[q]!;
    switch (column) {
      case 'l1':
      case 'cka':
        return pick(question, answer.direct[column]);
      case 'l1+approx':
        return pick(question, withAlpha(answer, 'l1', alpha.l1));
      case 'cka+approx':
        return pick(question, withAlpha(answer, 'cka', alpha.cka));
      case 'detector':
        return pick(question, answer.detector);
      case 'weights':
        return answer.weights;
      case 'auto':
        return answer.auto;
    }
  };

  console.log(`\nEvery method on fine-tuned children (probe: ${probePath}, 64 samples; α by validation on the closed-set queries of even-numbered families: l1 ${alpha.l1}, CKA ${alpha.cka})`);
  console.log(`  ${'row'.padEnd(12)} ${METHOD_COLUMNS.map((column) => column.padStart(10)).join(' ')}   queries`);
  const rows = [...new Set(questions.map((question) => question.row))].sort((a, b) => Number(a.startsWith('G')) - Number(b.startsWith('G')) || a.localeCompare(b));
  for (const row of rows) {
    const reported = questions.map((question, q) => ({ question, q })).filter(({ question }) => question.row === row && !question.validation);
    if (reported.length === 0) continue;
    const cells = METHOD_COLUMNS.map((column) => {
      const right = reported.filter(({ question, q }) => chosen(question, q, column) === question.truth).length;
      return `${((100 * right) / reported.length).toFixed(2)}%`.padStart(10);
    });
    console.log(`  ${row.padEnd(12)} ${cells.join(' ')}   ${reported.length}`);
  }
  console.log(`  time per candidate comparison: l1 and CKA with the approximation (3 forward passes each) ${((1000 * seconds.repr) / comparisons).toFixed(1)} ms, ` +
    `detector ${((1000 * seconds.detector) / comparisons).toFixed(1)} ms, weights ${((1000 * seconds.weights) / comparisons).toFixed(2)} ms (from fingerprints)`);
  console.log(`  memory: peak RSS ${(peakRss / 1048576).toFixed(0)} MB (${((peakRss - rssBefore) / 1048576).toFixed(0)} MB above the start, all models' parameters cached)`);
}

/** Scores of the usable candidates spread back over every candidate, −∞ for the others. */
function spread(usable: readonly boolean[], scores: readonly number[]): number[] {
  let k = 0;
  return usable.map((ok) => (ok ? scores[k++]! : -Infinity));
}
