/**
 * Messages between the checkpoint viewer's host (client/src/checkpointEditor.ts) and its
 * webview (client/src/webview/checkpoint.ts). Both sides import this module; it has no DOM or
 * `vscode` imports so that it type-checks and bundles for either side.
 *
 * The data types mirror InspectResult, FileLineage and CompareResult from
 * server/src/protocol.ts. They are restated because the protocol module pulls in the server
 * engine (Node types), which the webview's DOM-only type check cannot load. checkpointEditor.ts
 * assigns the protocol's types to these, so a protocol change that this mirror no longer accepts
 * fails the extension's type check.
 */

/** How a child checkpoint was made from its parent (protocol's Relation). */
export type CheckpointRelation = 'finetune' | 'adapter' | 'quantized' | 'fp16' | 'pruned' | 'converted' | 'merged' | 'unknown';

/** protocol's InspectReport: one checkpoint read from its index alone. */
export interface CheckpointReport {
  readonly path: string;
  readonly format?: string;
  readonly tensorCount: number;
  readonly parameterCount: number;
  readonly byteSize: number;
  /** Per element type: how many tensors and parameters use it. */
  readonly dtypes: Readonly<Partial<Record<string, { readonly tensors: number; readonly parameters: number }>>>;
  readonly tensors: readonly { readonly name: string; readonly dtype: string; readonly shape: readonly number[] }[];
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly warnings: readonly string[];
  /** Set when the file could not be read; the other fields are then empty. */
  readonly error?: string;
}

/** protocol's InspectResult. */
export interface CheckpointInspectResult {
  readonly report: CheckpointReport;
  readonly markdown: string;
}

/** protocol's GraphNode. */
export interface CheckpointNode {
  readonly uri: string;
  /** Path relative to its workspace folder. */
  readonly label: string;
  readonly format?: string;
  readonly sizeBytes: number;
  readonly parameters?: number;
  readonly error?: string;
  readonly family?: number;
}

/** protocol's GraphEdge (URIs). */
export interface CheckpointEdge {
  readonly parent: string;
  readonly child: string;
  readonly relation: CheckpointRelation;
  /** 0..1. */
  readonly confidence: number;
  readonly evidence: string;
}

/** protocol's GraphConflict. */
export interface CheckpointConflict {
  readonly child: string;
  readonly declaredParent: string;
  readonly message: string;
  /** The file that declares the parent. */
  readonly source?: string;
}

/** protocol's FileLineage. */
export interface CheckpointLineage {
  readonly node?: CheckpointNode;
  readonly parent?: CheckpointEdge;
  /** Ancestor edges from the parent upwards. */
  readonly ancestors: readonly CheckpointEdge[];
  /** Edges to every descendant, breadth first. */
  readonly descendants: readonly CheckpointEdge[];
  readonly conflicts: readonly CheckpointConflict[];
}

/** protocol's LayerDifference. */
export interface CheckpointLayerDifference {
  readonly name: string;
  readonly parameters: number;
  /** ‖a − b‖ / ‖b‖. */
  readonly relativeDistance: number;
  readonly cosine: number;
}

/** protocol's CompareResult. */
export interface CheckpointComparison {
  readonly a: string;
  readonly b: string;
  readonly related: boolean;
  readonly relativeDistance?: number;
  readonly layers: readonly CheckpointLayerDifference[];
  /** Layers present in both but re-initialised or reshaped. */
  readonly replaced: readonly string[];
}

/** Everything the viewer shows about one checkpoint. */
export interface CheckpointViewModel {
  readonly inspect: CheckpointInspectResult;
  /** The file's place in the lineage graph; absent while unknown. */
  readonly lineage?: CheckpointLineage;
  /** The file compared with `lineage.parent.parent` (a = this file, b = the parent). */
  readonly parentComparison?: CheckpointComparison;
}

/** Host → webview. */
export type CheckpointHostMessage =
  /**
   * The whole view model; replaces whatever the view shows. `lineagePending` says that a
   * `lineage` message will follow (the lineage is still being looked up).
   */
  | { readonly type: 'model'; readonly model: CheckpointViewModel; readonly lineagePending?: boolean }
  /**
   * New lineage for the same file, as it arrives or after the graph changed. `comparisonPending`
   * says that another `lineage` message with `parentComparison` will follow; `error` says why
   * the lineage (or the comparison, when `lineage` is present) could not be had.
   */
  | {
      readonly type: 'lineage';
      readonly lineage?: CheckpointLineage;
      readonly parentComparison?: CheckpointComparison;
      readonly comparisonPending?: boolean;
      readonly error?: string;
    }
  /** The file could not be inspected at all (for instance the language server is not running). */
  | { readonly type: 'failed'; readonly message: string };

/** Webview → host. */
export type CheckpointWebviewMessage =
  /** The page is loaded and listens; the host answers with a `model` message. */
  | { readonly type: 'ready' }
  /** Open a checkpoint (or a file declaring lineage) by URI; `beside` opens it to the side. */
  | { readonly type: 'open'; readonly uri: string; readonly beside?: boolean }
  /** Reveal a checkpoint in the lineage graph. */
  | { readonly type: 'showInGraph'; readonly uri: string }
  /** Compare this checkpoint with its parent in detail. */
  | { readonly type: 'compareWithParent' };

/** Checks a message from the webview before the host acts on it (the webview shows untrusted content). */
export function isCheckpointWebviewMessage(value: unknown): value is CheckpointWebviewMessage {
  if (typeof value !== 'object' || value === null) return false;
  const message = value as { type?: unknown; uri?: unknown; beside?: unknown };
  switch (message.type) {
    case 'ready':
    case 'compareWithParent':
      return true;
    case 'open':
      return typeof message.uri === 'string' && (message.beside === undefined || typeof message.beside === 'boolean');
    case 'showInGraph':
      return typeof message.uri === 'string';
    default:
      return false;
  }
}

/** Checks a message from the host (the webview also receives messages posted by other frames). */
export function isCheckpointHostMessage(value: unknown): value is CheckpointHostMessage {
  if (typeof value !== 'object' || value === null) return false;
  const message = value as { type?: unknown; model?: unknown; message?: unknown };
  switch (message.type) {
    case 'model':
      return typeof message.model === 'object' && message.model !== null;
    case 'lineage':
      return true;
    case 'failed':
      return typeof message.message === 'string';
    default:
      return false;
  }
}
