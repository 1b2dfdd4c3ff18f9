/**
 * The extension's custom LSP requests and notifications, declared once with their types.
 * The client and the server both import this module (as rust-analyzer's lsp_ext.ts).
 */
import { NotificationType, RequestType, RequestType0 } from 'vscode-languageserver-protocol';
import type { InspectReport } from './engine/inspect';
import type { Relation } from './engine/lineage/derived';
import type { ParentMethod } from './engine/lineage/methods';

export type { InspectReport, Relation };

export interface InspectParams {
  /** file:// URI of the checkpoint. */
  readonly uri: string;
}

export interface InspectResult {
  readonly report: InspectReport;
  /** The report as Markdown, the same text the hover shows. */
  readonly markdown: string;
}

export const InspectRequest = new RequestType<InspectParams, InspectResult, void>('neuralLineage/inspect');

/** One checkpoint of the workspace as the graph shows it. */
export interface GraphNode {
  /** file:// URI; the node's identity. */
  readonly uri: string;
  /** Path relative to its workspace folder, for labels. */
  readonly label: string;
  readonly format?: string;
  readonly sizeBytes: number;
  readonly parameters?: number;
  /** Why the file could not be read, when it could not. */
  readonly error?: string;
  /** Index of its family in LineageGraph.families; unreadable files have none. */
  readonly family?: number;
}

export interface GraphEdge {
  readonly parent: string;
  readonly child: string;
  readonly relation: Relation;
  readonly confidence: number;
  readonly evidence: string;
}

export interface GraphConflict {
  readonly child: string;
  readonly declaredParent: string;
  readonly message: string;
  /** Where the declaration is written (file URI), for diagnostics. */
  readonly source?: string;
}

export interface LineageGraph {
  /** Increases with every change; lets clients drop stale answers. */
  readonly version: number;
  readonly nodes: readonly GraphNode[];
  readonly edges: readonly GraphEdge[];
  /** Node URIs per family. */
  readonly families: readonly (readonly string[])[];
  readonly conflicts: readonly GraphConflict[];
  /** True while checkpoints are still being fingerprinted; the graph is then partial. */
  readonly indexing: boolean;
}

export const GraphRequest = new RequestType0<LineageGraph, void>('neuralLineage/graph');

export interface LineageParams {
  readonly uri: string;
}

/** One checkpoint's place in the graph: parent, ancestors back to its root, descendants. */
export interface FileLineage {
  readonly node?: GraphNode;
  readonly parent?: GraphEdge;
  /** Ancestor edges from the parent upwards. */
  readonly ancestors: readonly GraphEdge[];
  /** Edges to every descendant, breadth first. */
  readonly descendants: readonly GraphEdge[];
  readonly conflicts: readonly GraphConflict[];
}

export const LineageRequest = new RequestType<LineageParams, FileLineage, void>('neuralLineage/lineage');

export interface FindParentParams {
  readonly child: string;
  /** Candidate URIs; when absent, every other checkpoint of the workspace. */
  readonly candidates?: readonly string[];
  /** When absent, the `neuralLineage.method` setting. */
  readonly method?: ParentMethod;
}

export interface FindParentResult {
  readonly child: string;
  readonly parent?: string;
  readonly ranking: readonly { candidate: string; probability: number; related: boolean; relativeDistance?: number }[];
  /** The method that answered (auto names the one it used). */
  readonly method: ParentMethod;
  /** How: the device, model and probe of the model-running methods. */
  readonly details: string;
  /** The learned detector's probability that no candidate is the parent. */
  readonly noParent?: number;
}

export const FindParentRequest = new RequestType<FindParentParams, FindParentResult, void>('neuralLineage/findParent');

export interface CompareParams {
  readonly a: string;
  readonly b: string;
}

export interface LayerDifference {
  readonly name: string;
  readonly parameters: number;
  /** ‖a − b‖ / ‖b‖. */
  readonly relativeDistance: number;
  readonly cosine: number;
}

export interface CompareResult {
  readonly a: string;
  readonly b: string;
  readonly related: boolean;
  readonly relativeDistance?: number;
  readonly layers: readonly LayerDifference[];
  /** Layers present in both but re-initialised or reshaped (replaced heads). */
  readonly replaced: readonly string[];
}

export const CompareRequest = new RequestType<CompareParams, CompareResult, void>('neuralLineage/compare');

/** Re-reads every checkpoint (ignoring cached fingerprints) and rebuilds the graph. */
export const RescanRequest = new RequestType0<void, void>('neuralLineage/rescan');

export interface GraphChangedParams {
  readonly version: number;
}

/** Sent by the server whenever the graph changes (a file indexed, changed, renamed, deleted). */
export const GraphChangedNotification = new NotificationType<GraphChangedParams>('neuralLineage/graphChanged');

/** Settings the server reads from the `neuralLineage` section. */
export interface LineageSettings {
  /** Checkpoints above this size (MB) are not read; 0 means no limit. */
  readonly maxFileSizeMB: number;
  /** Glob patterns of files to index, relative to each workspace folder. */
  readonly include: readonly string[];
  readonly exclude: readonly string[];
  /** Where fingerprints are cached; empty means the extension's storage. */
  readonly cacheDirectory: string;
  readonly device: 'auto' | 'cpu' | 'gpu';
  /** Default method of Find Parent. */
  readonly method: ParentMethod;
  /** Probe inputs of the representation methods (.npy/.npz or a folder of images); empty: the built-in probe. */
  readonly probeData: string;
}
