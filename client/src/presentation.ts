import * as path from 'node:path';
import type { GraphNode, Relation } from '../../server/src/protocol';

/** How each relation reads in tooltips, trees and pickers. */
export const RELATION_LABEL: Readonly<Record<Relation, string>> = {
  finetune: 'fine-tuned from',
  adapter: 'adapter on',
  quantized: 'quantized copy of',
  fp16: '16-bit copy of',
  pruned: 'pruned copy of',
  converted: 'same weights as',
  merged: 'merged from',
  unknown: 'derived from',
};

/** One- or two-letter explorer badges (VS Code allows at most two characters). */
export const RELATION_BADGE: Readonly<Record<Relation, string>> = {
  finetune: 'FT',
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

export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function percent(confidence: number): string {
  return `${Math.round(confidence * 100)}%`;
}
