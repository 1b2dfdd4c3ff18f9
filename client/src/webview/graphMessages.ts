/**
 * Messages between the ancestry-graph webview (graph.ts) and the panel that hosts it
 * (client/src/graphPanel.ts). Both sides import this module, so it has no DOM and no `vscode`
 * imports.
 *
 * The graph types mirror LineageGraph and friends from server/src/protocol.ts. They are restated
 * here because the protocol module pulls in the server engine (Node types), which the webview's
 * DOM-only type check cannot load. graphPanel.ts assigns a LineageGraph to a WebviewGraph, so a
 * change to the protocol that this mirror no longer accepts fails the extension's type check.
 */

/** How a child checkpoint was made from its parent (protocol's Relation). */
export type GraphRelation = 'finetune' | 'adapter' | 'quantized' | 'fp16' | 'pruned' | 'converted' | 'merged' | 'unknown';

export const GRAPH_RELATIONS: readonly GraphRelation[] = ['finetune', 'adapter', 'quantized', 'fp16', 'pruned', 'converted', 'merged', 'unknown'];

export interface WebviewGraphNode {
  /** file:// URI; the node's identity. */
  readonly uri: string;
  /** Path relative to its workspace folder. */
  readonly label: string;
  readonly format?: string;
  readonly sizeBytes: number;
  readonly parameters?: number;
  /** Why the file could not be read, when it could not. */
  readonly error?: string;
  /** Index into WebviewGraph.families. */
  readonly family?: number;
}

export interface WebviewGraphEdge {
  readonly parent: string;
  readonly child: string;
  readonly relation: GraphRelation;
  /** 0..1. */
  readonly confidence: number;
  readonly evidence: string;
}

export interface WebviewGraphConflict {
  readonly child: string;
  readonly declaredParent: string;
  readonly message: string;
}

export interface WebviewGraph {
  readonly version: number;
  readonly nodes: readonly WebviewGraphNode[];
  readonly edges: readonly WebviewGraphEdge[];
  /** Node URIs per family. */
  readonly families: readonly (readonly string[])[];
  readonly conflicts: readonly WebviewGraphConflict[];
  /** True while checkpoints are still being read; the graph is then partial. */
  readonly indexing: boolean;
}

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
