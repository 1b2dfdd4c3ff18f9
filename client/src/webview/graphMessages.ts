/**
 * Messages between the ancestry-graph webview (graph.ts) and the panel that hosts it
 * (client/src/graphPanel.ts). Both sides import this module, so it has no DOM and no `vscode`
 * imports. The graph is the protocol's own LineageGraph (type-only imports, erased from the
 * bundles).
 */
import type { GraphConflict, GraphEdge, GraphNode, LineageGraph, Relation } from '../../../server/src/protocol';

export type GraphRelation = Relation;
export type WebviewGraphNode = GraphNode;
export type WebviewGraphEdge = GraphEdge;
export type WebviewGraphConflict = GraphConflict;
export type WebviewGraph = LineageGraph;

/** Every relation, in the legend's order. */
export const GRAPH_RELATIONS: readonly GraphRelation[] = ['finetune', 'run', 'adapter', 'quantized', 'fp16', 'pruned', 'converted', 'merged', 'unknown'];

// ---- Host → webview --------------------------------------------------------------------------

/** The whole graph; `focus` (a node URI) selects the checkpoint whose lineage is highlighted. */
export interface GraphDataMessage {
  readonly type: 'graph';
  readonly graph: WebviewGraph;
  readonly focus?: string;
}

/** Highlights one checkpoint's lineage (or clears it) without resending the graph. */
export interface FocusMessage {
  readonly type: 'focus';
  readonly uri: string | null;
}

export type HostToWebviewMessage = GraphDataMessage | FocusMessage;

// ---- Webview → host --------------------------------------------------------------------------

/** The script is listening; the host answers with a `graph` message. */
export interface ReadyMessage {
  readonly type: 'ready';
}

/** Open the checkpoint in an editor. */
export interface OpenMessage {
  readonly type: 'open';
  readonly uri: string;
}

/** Show the checkpoint in the Explorer. */
export interface RevealMessage {
  readonly type: 'reveal';
  readonly uri: string;
}

/** Save this standalone SVG document (styles resolved, no CSS variables). */
export interface ExportSvgMessage {
  readonly type: 'exportSvg';
  readonly svg: string;
}

/** The user focused a checkpoint (or cleared the focus, `uri: null`). Informational. */
export interface FocusChangedMessage {
  readonly type: 'focusChanged';
  readonly uri: string | null;
}

export type WebviewToHostMessage = ReadyMessage | OpenMessage | RevealMessage | ExportSvgMessage | FocusChangedMessage;

/** Larger exports are refused by the host (a graph of thousands of nodes stays well below). */
export const MAX_EXPORT_SVG_CHARS = 64 * 1024 * 1024;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/** Checks a message received from the webview before the host acts on it. */
export function isWebviewToHostMessage(value: unknown): value is WebviewToHostMessage {
  if (!isRecord(value)) return false;
  switch (value['type']) {
    case 'ready':
      return true;
    case 'open':
    case 'reveal':
      return typeof value['uri'] === 'string';
    case 'exportSvg':
      return typeof value['svg'] === 'string' && value['svg'].length <= MAX_EXPORT_SVG_CHARS;
    case 'focusChanged':
      return value['uri'] === null || typeof value['uri'] === 'string';
    default:
      return false;
  }
}

/** Checks a message received from the host before the webview uses it. */
export function isHostToWebviewMessage(value: unknown): value is HostToWebviewMessage {
  if (!isRecord(value)) return false;
  switch (value['type']) {
    case 'graph': {
      const graph = value['graph'];
      return (
        isRecord(graph) &&
        Array.isArray(graph['nodes']) &&
        Array.isArray(graph['edges']) &&
        Array.isArray(graph['families']) &&
        (value['focus'] === undefined || typeof value['focus'] === 'string')
      );
    }
    case 'focus':
      return value['uri'] === null || typeof value['uri'] === 'string';
    default:
      return false;
  }
}
