/**
 * Messages between the checkpoint viewer's host (client/src/checkpointEditor.ts) and its
 * webview (client/src/webview/checkpoint.ts). Both sides import this module; it has no DOM or
 * `vscode` imports so that it bundles for either side. The data are the protocol's own types
 * (type-only imports, erased from the bundles).
 */
import type { CompareResult, FileLineage, GraphConflict, GraphEdge, GraphNode, InspectReport, InspectResult, LayerDifference, Relation } from '../../../server/src/protocol';

export type CheckpointRelation = Relation;
export type CheckpointReport = InspectReport;
export type CheckpointInspectResult = InspectResult;
export type CheckpointNode = GraphNode;
export type CheckpointEdge = GraphEdge;
export type CheckpointConflict = GraphConflict;
export type CheckpointLineage = FileLineage;
export type CheckpointLayerDifference = LayerDifference;
export type CheckpointComparison = CompareResult;

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
