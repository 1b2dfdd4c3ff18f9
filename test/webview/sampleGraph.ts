/**
 * A realistic lineage graph for the webview tests: a language-model family (base, fp16 copy, chat
 * fine-tune with a pruned copy and a LoRA adapter, code fine-tune, a merge of the two) and a
 * vision family (converted copy, fine-tune whose file name carries markup), one unreadable
 * download and one conflicting declaration.
 */
import type { GraphEdge, GraphNode, LineageGraph } from '../../server/src/protocol';

const WORKSPACE = 'file:///work/project/';

export function uriOf(label: string): string {
  return WORKSPACE + label.split('/').map(encodeURIComponent).join('/');
}

function node(label: string, format: string, sizeBytes: number, parameters: number | undefined, family: number | undefined, error?: string): GraphNode {
  return {
    uri: uriOf(label),
    label,
    format,
    sizeBytes,
    ...(parameters !== undefined ? { parameters } : {}),
    ...(family !== undefined ? { family } : {}),
    ...(error !== undefined ? { error } : {}),
  };
}

/** A file name that would run script if it were ever parsed as HTML. */
export const HOSTILE_LABEL = 'vision/cats-<img src=x onerror=window.__pwned=1>-<script>window.__pwned=2</script>.safetensors';

export const N = {
  base: node('models/llama-7b/base.safetensors', 'safetensors', 13_476_839_424, 6_738_415_616, 0),
  fp16: node('models/llama-7b/base-fp16.safetensors', 'safetensors', 13_476_839_424, 6_738_415_616, 0),
  chat: node('models/llama-7b/chat/model.safetensors', 'safetensors', 13_476_839_424, 6_738_415_616, 0),
  pruned: node('models/llama-7b/chat/model-pruned-50.safetensors', 'safetensors', 6_738_419_712, 6_738_415_616, 0),
  lora: node('models/llama-7b/chat/lora-adapter.safetensors', 'safetensors', 33_571_840, 8_388_608, 0),
  code: node('models/llama-7b/code/pytorch_model.bin', 'pytorch', 13_477_100_544, 6_738_415_616, 0),
  merged: node('models/llama-7b/merged/chat-code-slerp.safetensors', 'safetensors', 13_476_839_424, 6_738_415_616, 0),
  resnet: node('vision/resnet50.pth', 'pytorch', 102_530_333, 25_557_032, 1),
  resnetSt: node('vision/resnet50.safetensors', 'safetensors', 102_469_840, 25_557_032, 1),
  cats: node(HOSTILE_LABEL, 'safetensors', 94_371_840, 23_512_130, 1),
  broken: node('downloads/partial.ckpt', 'pytorch', 536_870_912, undefined, undefined, 'truncated zip archive: end of central directory not found'),
} as const;

function edge(parent: GraphNode, child: GraphNode, relation: GraphEdge['relation'], confidence: number, evidence: string): GraphEdge {
  return { parent: parent.uri, child: child.uri, relation, confidence, evidence };
}

export const EDGES: readonly GraphEdge[] = [
  edge(N.base, N.fp16, 'fp16', 0.99, 'same tensors; values equal after casting to float16'),
  edge(N.base, N.chat, 'finetune', 0.93, 'relative distance 0.021 across 291 layers; config.json names the base'),
  edge(N.chat, N.pruned, 'pruned', 0.9, '50.0% of weights zeroed, the rest identical'),
  edge(N.chat, N.lora, 'adapter', 0.8, 'LoRA A/B pairs for q_proj and v_proj of a 4096-wide model'),
  edge(N.base, N.code, 'finetune', 0.88, 'relative distance 0.034 across 291 layers'),
  edge(N.chat, N.merged, 'merged', 0.71, 'weights lie between the chat and code fine-tunes (t ≈ 0.5)'),
  edge(N.code, N.merged, 'merged', 0.69, 'weights lie between the chat and code fine-tunes (t ≈ 0.5)'),
  edge(N.resnet, N.resnetSt, 'converted', 1, 'identical tensors in another format'),
  edge(N.resnetSt, N.cats, 'finetune', 0.85, 'backbone within 1.2% of the parent; fc layer replaced'),
];

export const NODES: readonly GraphNode[] = Object.values(N);

export function sampleGraph(overrides: Partial<LineageGraph> = {}): LineageGraph {
  return {
    version: 7,
    nodes: NODES,
    edges: EDGES,
    families: [
      [N.base, N.fp16, N.chat, N.pruned, N.lora, N.code, N.merged].map((n) => n.uri),
      [N.resnet, N.resnetSt, N.cats].map((n) => n.uri),
    ],
    conflicts: [
      {
        child: N.code.uri,
        declaredParent: N.fp16.uri,
        message: 'config.json names base-fp16.safetensors as the parent, but the weights match base.safetensors',
      },
    ],
    indexing: false,
    ...overrides,
  };
}

/** The label text the graph puts on an edge. */
export function edgeLabel(edge: GraphEdge): string {
  return `${edge.relation} ${Math.round(edge.confidence * 100)}%`;
}

/** The file-name part of a label, as the node's first line shows it. */
export function baseName(label: string): string {
  return label.slice(label.lastIndexOf('/') + 1);
}
