import * as path from 'node:path';
import type { GraphNode, Relation } from '../../server/src/protocol';

/** One- or two-letter explorer badges (VS Code allows at most two characters). */
export const RELATION_BADGE: Readonly<Record<Relation, string>> = {
  finetune: 'FT',
  run: 'R',
  adapter: 'AD',
  quantized: 'Q',
  fp16: '16',
  pruned: 'PR',
  converted: '=',
  merged: 'M',
  unknown: '?',
};

export function nodeName(node: GraphNode | undefined, uri: string): string {
  return node?.label ?? path.basename(decodeURIComponent(uri));
}

export function percent(confidence: number): string {
  return `${Math.round(confidence * 100)}%`;
}
