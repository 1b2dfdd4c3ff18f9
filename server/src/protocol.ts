/**
 * The extension's custom LSP requests and notifications, declared once with their types.
 * The client and the server both import this module (as rust-analyzer's lsp_ext.ts).
 */
import { RequestType } from 'vscode-languageserver-protocol';
import type { InspectReport } from './engine/inspect';

export type { InspectReport };

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

/** Settings the server reads from the `neuralLineage` section. */
export interface LineageSettings {
  /** Checkpoints above this size (MB) are not read; 0 means no limit. */
  readonly maxFileSizeMB: number;
}
