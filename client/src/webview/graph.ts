/**
 * The ancestry-graph webview: lays the lineage graph out as a layered DAG (dagre) and draws it
 * as plain SVG built node by node. Labels come from file names, so every string reaches the page
 * through textContent or an attribute, never as markup.
 *
 * Mouse: click a checkpoint to open it, Alt+click to reveal it in the Explorer, Shift+click to
 * focus its lineage, right-click for a menu. Wheel zooms, dragging pans. Keyboard: Tab to a
 * checkpoint, Enter opens, Alt+Enter reveals, F focuses, Shift+F10 opens the menu, Escape clears
 * the focus; + / - / 0 zoom and fit.
 */
import { formatBytes, formatCount } from '../../../server/src/engine/units';
import {
  GRAPH_RELATIONS,
  isHostToWebviewMessage,
  type GraphRelation,
  type HostToWebviewMessage,
  type WebviewGraph,
  type WebviewGraphEdge,
  type WebviewGraphNode,
  type WebviewToHostMessage,
} from './graphMessages';

type Dagre = typeof import('@dagrejs/dagre', { with: { 'resolution-mode': 'import' } });

interface VsCodeApi {
  postMessage(message: unknown): void;
  getState(): unknown;
  setState<T>(state: T): T;
}
declare function acquireVsCodeApi(): VsCodeApi;

/** What survives a reload of the webview (tab hidden and shown, window restarted). */
interface ViewState {
  zoom: number;
  panX: number;
  panY: number;
  /** Refit whenever the graph or the panel size changes, until the user zooms or pans. */
  autoFit: boolean;
  /** 'all', 'none' (checkpoints without a family) or a family index. */
  family: string;
  focus: string | null;
  legendOpen: boolean;
}

interface Point {
  x: number;
  y: number;
}

interface TextLine {
  text: string;
  className: string;
  font: TextFont;
}

interface TextFont {
  size: number;
  weight: number;
  lineHeight: number;
}

interface NodeBox {
  node: WebviewGraphNode;
  lines: TextLine[];
  width: number;
  height: number;
  x: number;
  y: number;
}

interface EdgeShape {
  edge: WebviewGraphEdge;
  points: Point[];
  label: string;
  labelWidth: number;
  labelX: number;
  labelY: number;
}

interface Layout {
  nodes: Map<string, NodeBox>;
  edges: EdgeShape[];
  width: number;
  height: number;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
const MIN_ZOOM = 0.05;
const MAX_ZOOM = 4;
const NODE_MIN_WIDTH = 150;
const NODE_MAX_WIDTH = 280;
const NODE_PAD_X = 12;
const NODE_PAD_Y = 9;
const EDGE_LABEL_HEIGHT = 16;
const FONT_NAME: TextFont = { size: 13, weight: 600, lineHeight: 18 };
const FONT_SMALL: TextFont = { size: 11, weight: 400, lineHeight: 15 };
const FONT_EDGE: TextFont = { size: 10.5, weight: 400, lineHeight: 14 };
const DRAG_THRESHOLD = 4;

const RELATION_NAMES: Record<GraphRelation, string> = {
  finetune: 'Fine-tuned',
  run: 'Same training run',
  adapter: 'Adapter (LoRA)',
  quantized: 'Quantized copy',
  fp16: 'Half-precision copy',
  pruned: 'Pruned copy',
  converted: 'Converted copy',
  merged: 'Merged',
  unknown: 'Unknown relation',
};

const DEFAULT_STATE: ViewState = { zoom: 1, panX: 0, panY: 0, autoFit: true, family: 'all', focus: null, legendOpen: true };

const vscode = acquireVsCodeApi();
let state: ViewState = readState(vscode.getState());
let graph: WebviewGraph | undefined;
let layout: Layout | undefined;
let dagre: Dagre | undefined;

function post(message: WebviewToHostMessage): void {
  vscode.postMessage(message);
}

function saveState(): void {
  vscode.setState<ViewState>({ ...state });
}

function readState(saved: unknown): ViewState {
  if (typeof saved !== 'object' || saved === null) return { ...DEFAULT_STATE };
  const s = saved as Partial<Record<keyof ViewState, unknown>>;
  const finite = (value: unknown, fallback: number): number => (typeof value === 'number' && Number.isFinite(value) ? value : fallback);
  return {
    zoom: clamp(finite(s.zoom, DEFAULT_STATE.zoom), MIN_ZOOM, MAX_ZOOM),
    panX: finite(s.panX, 0),
    panY: finite(s.panY, 0),
    autoFit: typeof s.autoFit === 'boolean' ? s.autoFit : true,
    family: typeof s.family === 'string' ? s.family : 'all',
    focus: typeof s.focus === 'string' ? s.focus : null,
    legendOpen: typeof s.legendOpen === 'boolean' ? s.legendOpen : true,
  };
}

// ---- DOM helpers ---------------------------------------------------------------------------

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}

function html<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attributes: Record<string, string | number> = {}): SVGElementTagNameMap[K] {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  return element;
}

function button(text: string, title: string, onClick: () => void): HTMLButtonElement {
  const element = html('button', 'tool', text);
  element.type = 'button';
  element.title = title;
  element.setAttribute('aria-label', title);
  element.addEventListener('click', onClick);
  return element;
}

// ---- The page's fixed parts ----------------------------------------------------------------

const familySelect = html('select');
familySelect.id = 'family-filter';
familySelect.title = 'Show one family of checkpoints';
const focusSelect = html('select');
focusSelect.id = 'focus-select';
focusSelect.title = "Highlight one checkpoint's ancestors and descendants";
const indexingBadge = html('span', 'indexing');
indexingBadge.setAttribute('role', 'status');
indexingBadge.append(html('span', 'spinner'), html('span', undefined, 'Indexing…'));
indexingBadge.hidden = true;
const counts = html('span', 'counts');
const conflictBadge = html('span', 'conflicts');
conflictBadge.hidden = true;

const toolbar = html('div', 'toolbar');
toolbar.setAttribute('role', 'toolbar');
toolbar.setAttribute('aria-label', 'Graph');
const familyLabel = html('label', 'field', 'Family ');
familyLabel.append(familySelect);
const focusLabel = html('label', 'field', 'Focus ');
focusLabel.append(focusSelect);
const zoomGroup = html('span', 'group');
zoomGroup.append(
  button('−', 'Zoom out (-)', () => zoomBy(1 / 1.25)),
  button('+', 'Zoom in (+)', () => zoomBy(1.25)),
  button('Fit', 'Fit the graph to the view (0)', () => fitToView(true)),
);
const exportButton = button('Export SVG', 'Save the graph as an SVG image', () => post({ type: 'exportSvg', svg: exportSvg() }));
exportButton.classList.add('export');
const status = html('span', 'status');
status.setAttribute('aria-live', 'polite');
status.append(indexingBadge, counts, conflictBadge);
toolbar.append(familyLabel, focusLabel, zoomGroup, exportButton, status);

const canvas = html('div', 'canvas');
const graphSvg = svg('svg', { class: 'graph', role: 'group', 'aria-label': 'Checkpoint lineage graph' });
const defs = svg('defs');
const viewport = svg('g', { class: 'viewport' });
const edgeLayer = svg('g', { class: 'edges' });
const nodeLayer = svg('g', { class: 'nodes' });
viewport.append(edgeLayer, nodeLayer);
graphSvg.append(defs, viewport);
for (const relation of GRAPH_RELATIONS) {
  const marker = svg('marker', {
    id: `arrow-${relation}`,
    viewBox: '0 0 10 10',
    refX: 9,
    refY: 5,
    markerWidth: 9,
    markerHeight: 9,
    markerUnits: 'userSpaceOnUse',
    orient: 'auto',
  });
  marker.append(svg('path', { d: 'M0,1 L10,5 L0,9 z', class: `arrow rel-${relation}` }));
  defs.append(marker);
}

const emptyState = html('div', 'empty');
emptyState.setAttribute('role', 'status');
const tooltip = html('div', 'tooltip');
tooltip.setAttribute('role', 'tooltip');
tooltip.id = 'graph-tooltip';
tooltip.hidden = true;
const menu = html('div', 'menu');
menu.setAttribute('role', 'menu');
menu.hidden = true;
const legend = buildLegend();
canvas.append(graphSvg, emptyState, legend, tooltip, menu);
document.body.append(toolbar, canvas);
showEmpty('Loading the lineage graph…');

function buildLegend(): HTMLDetailsElement {
  const details = html('details', 'legend');
  details.open = state.legendOpen;
  details.addEventListener('toggle', () => {
    state.legendOpen = details.open;
    if (state.autoFit && layout) fitToView(false);
    saveState();
  });
  details.append(html('summary', undefined, 'Legend'));
  const list = html('ul');
  for (const relation of GRAPH_RELATIONS) {
    const item = html('li');
    const sample = svg('svg', { width: 36, height: 10, 'aria-hidden': 'true', class: `legend-sample rel-${relation}` });
    if (relation === 'merged') sample.append(svg('line', { x1: 1, y1: 5, x2: 35, y2: 5, class: 'edge-line' }), svg('line', { x1: 1, y1: 5, x2: 35, y2: 5, class: 'edge-inner' }));
    else sample.append(svg('line', { x1: 1, y1: 5, x2: 35, y2: 5, class: 'edge-line' }));
    item.append(sample, html('span', undefined, RELATION_NAMES[relation]));
    list.append(item);
  }
  const unreadable = html('li');
  const box = svg('svg', { width: 36, height: 14, 'aria-hidden': 'true', class: 'legend-sample' });
  const nodeSample = svg('g', { class: 'node unreadable' });
  nodeSample.append(svg('rect', { x: 4, y: 1, width: 28, height: 12, rx: 3, class: 'node-box' }));
  box.append(nodeSample);
  unreadable.append(box, html('span', undefined, 'Unreadable file'));
  list.append(unreadable);
  details.append(
    list,
    html('p', 'legend-note', 'Edge labels give the relation and its confidence.'),
    html('p', 'legend-note', 'Click: open · Alt+click: reveal · Shift+click: focus · Right-click: more'),
  );
  return details;
}

// ---- Text measurement ----------------------------------------------------------------------

const measureContext = document.createElement('canvas').getContext('2d');

/** The theme's UI font, read once per layout. */
let measureFamily = 'sans-serif';

function measure(text: string, font: TextFont): number {
  if (!measureContext) return text.length * font.size * 0.6;
  measureContext.font = `${font.weight} ${font.size}px ${measureFamily}`;
  return measureContext.measureText(text).width;
}

/** Shortens text to fit `width`, cutting the middle (paths) or the end. */
function fitText(text: string, font: TextFont, width: number, cut: 'middle' | 'end'): string {
  if (measure(text, font) <= width) return text;
  let low = 0;
  let high = text.length;
  const shortened = (keep: number): string => {
    if (cut === 'end') return `${text.slice(0, keep)}…`;
    const head = Math.ceil(keep / 2);
    return `${text.slice(0, head)}…${text.slice(text.length - (keep - head))}`;
  };
  while (low < high) {
    const mid = Math.ceil((low + high) / 2);
    if (measure(shortened(mid), font) <= width) low = mid;
    else high = mid - 1;
  }
  return shortened(low);
}

// ---- Graph model helpers -------------------------------------------------------------------

function splitLabel(label: string): { name: string; dir: string } {
  const index = Math.max(label.lastIndexOf('/'), label.lastIndexOf('\\'));
  return index < 0 ? { name: label, dir: '' } : { name: label.slice(index + 1), dir: label.slice(0, index + 1) };
}

function filePath(uri: string): string {
  try {
    const url = new URL(uri);
    if (url.protocol !== 'file:') return uri;
    const path = decodeURIComponent(url.pathname);
    return /^\/[a-zA-Z]:/.test(path) ? path.slice(1) : path;
  } catch {
    return uri;
  }
}

function percent(confidence: number): string {
  return `${Math.round(clamp(confidence, 0, 1) * 100)}%`;
}

function metaText(node: WebviewGraphNode): string {
  const parts: string[] = [];
  if (node.format) parts.push(node.format);
  parts.push(formatBytes(node.sizeBytes));
  if (node.parameters !== undefined) parts.push(`${formatCount(node.parameters)} params`);
  if (node.error !== undefined) parts.push('unreadable');
  return parts.join(' · ');
}

/** Lookups over the current graph, rebuilt when a new graph arrives. */
interface GraphIndex {
  nodes: Map<string, WebviewGraphNode>;
  parents: Map<string, WebviewGraphEdge[]>;
  children: Map<string, WebviewGraphEdge[]>;
}

let index: GraphIndex = { nodes: new Map(), parents: new Map(), children: new Map() };

function indexGraph(current: WebviewGraph): GraphIndex {
  const built: GraphIndex = { nodes: new Map(current.nodes.map((node) => [node.uri, node])), parents: new Map(), children: new Map() };
  for (const edge of current.edges) {
    built.parents.set(edge.child, [...(built.parents.get(edge.child) ?? []), edge]);
    built.children.set(edge.parent, [...(built.children.get(edge.parent) ?? []), edge]);
  }
  return built;
}

function nodeById(uri: string): WebviewGraphNode | undefined {
  return index.nodes.get(uri);
}

function lineage(uri: string): { ancestors: Set<string>; descendants: Set<string> } {
  const reach = (downwards: boolean): Set<string> => {
    const seen = new Set<string>();
    const queue = [uri];
    for (let current = queue.shift(); current !== undefined; current = queue.shift()) {
      const edges = (downwards ? index.children : index.parents).get(current) ?? [];
      for (const edge of edges) {
        const next = downwards ? edge.child : edge.parent;
        if (next === uri || seen.has(next)) continue;
        seen.add(next);
        queue.push(next);
      }
    }
    return seen;
  };
  return { ancestors: reach(false), descendants: reach(true) };
}

function visibleNodes(current: WebviewGraph): WebviewGraphNode[] {
  if (state.family === 'all') return [...current.nodes];
  if (state.family === 'none') return current.nodes.filter((node) => node.family === undefined);
  const family = Number(state.family);
  return current.nodes.filter((node) => node.family === family);
}

function familyName(current: WebviewGraph, index: number): string {
  const members = current.families[index] ?? [];
  const children = new Set(current.edges.map((edge) => edge.child));
  const root = members.find((uri) => !children.has(uri)) ?? members[0];
  const node = root === undefined ? undefined : current.nodes.find((candidate) => candidate.uri === root);
  return node ? splitLabel(node.label).name : `family ${index + 1}`;
}

// ---- Layout --------------------------------------------------------------------------------

function nodeBox(node: WebviewGraphNode): NodeBox {
  const { name, dir } = splitLabel(node.label);
  const lines: TextLine[] = [{ text: node.error !== undefined ? `⚠ ${name}` : name, className: 'node-name', font: FONT_NAME }];
  if (dir) lines.push({ text: dir, className: 'node-dir', font: FONT_SMALL });
  lines.push({ text: metaText(node), className: node.error !== undefined ? 'node-meta node-error' : 'node-meta', font: FONT_SMALL });
  const inner = NODE_MAX_WIDTH - 2 * NODE_PAD_X;
  for (const line of lines) line.text = fitText(line.text, line.font, inner, line.className === 'node-dir' ? 'middle' : 'end');
  const widest = Math.max(...lines.map((line) => measure(line.text, line.font)));
  const width = Math.ceil(clamp(widest + 2 * NODE_PAD_X, NODE_MIN_WIDTH, NODE_MAX_WIDTH));
  const height = Math.ceil(2 * NODE_PAD_Y + lines.reduce((sum, line) => sum + line.font.lineHeight, 0));
  return { node, lines, width, height, x: 0, y: 0 };
}

function edgeLabel(edge: WebviewGraphEdge): string {
  return `${edge.relation} ${percent(edge.confidence)}`;
}

/** Checkpoints linked by edges, largest group first; unlinked checkpoints come last, one each. */
function components(uris: readonly string[], edges: readonly WebviewGraphEdge[]): string[][] {
  const root = new Map(uris.map((uri) => [uri, uri]));
  const find = (uri: string): string => {
    let current = uri;
    while (root.get(current) !== current) current = root.get(current)!;
    root.set(uri, current);
    return current;
  };
  for (const edge of edges) root.set(find(edge.child), find(edge.parent));
  const groups = new Map<string, string[]>();
  for (const uri of uris) {
    const key = find(uri);
    groups.set(key, [...(groups.get(key) ?? []), uri]);
  }
  return [...groups.values()].sort((a, b) => b.length - a.length);
}

/** One component laid out by dagre, at the origin. */
function layoutComponent(engine: Dagre, boxes: NodeBox[], edges: readonly WebviewGraphEdge[]): { edges: EdgeShape[]; width: number; height: number } {
  if (edges.length === 0 && boxes.length === 1) {
    const box = boxes[0]!;
    box.x = box.width / 2;
    box.y = box.height / 2;
    return { edges: [], width: box.width, height: box.height };
  }
  const g = new engine.graphlib.Graph({ multigraph: true });
  // dagre halves ranksep to give edge labels a rank of their own between rows of checkpoints.
  g.setGraph({ rankdir: 'TB', nodesep: 32, edgesep: 16, ranksep: 84, marginx: 0, marginy: 0 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const box of boxes) g.setNode(box.node.uri, { width: box.width, height: box.height });
  const labels = edges.map(edgeLabel);
  edges.forEach((edge, i) => {
    const width = Math.ceil(measure(labels[i]!, FONT_EDGE) + 10);
    g.setEdge(edge.parent, edge.child, { width, height: EDGE_LABEL_HEIGHT, labelpos: 'c', minlen: 1 }, String(i));
  });
  engine.layout(g);
  for (const box of boxes) {
    const placed = g.node(box.node.uri) as { x: number; y: number };
    box.x = placed.x;
    box.y = placed.y;
  }
  const shapes = edges.map((edge, i): EdgeShape => {
    const placed = g.edge({ v: edge.parent, w: edge.child, name: String(i) }) as { points?: Point[]; x?: number; y?: number; width?: number };
    const points = placed.points ?? [];
    const middle = points[Math.floor(points.length / 2)];
    return { edge, points, label: labels[i]!, labelWidth: placed.width ?? 40, labelX: placed.x ?? middle?.x ?? 0, labelY: placed.y ?? middle?.y ?? 0 };
  });
  const size = g.graph() as { width?: number; height?: number };
  return { edges: shapes, width: size.width ?? 0, height: size.height ?? 0 };
}

interface Piece {
  readonly width: number;
  readonly height: number;
}

/**
 * Places pieces left to right in rows. Of the row widths that change the result, it keeps the
 * one that lets the whole drawing be shown largest in a view of the given size.
 */
function packRows(pieces: readonly Piece[], view: { width: number; height: number }, gapX: number, gapY: number): { offsets: Point[]; width: number; height: number } {
  const shelf = (limit: number): { offsets: Point[]; width: number; height: number } => {
    const offsets: Point[] = [];
    let x = 0;
    let y = 0;
    let rowHeight = 0;
    let width = 0;
    for (const piece of pieces) {
      if (x > 0 && x + piece.width > limit) {
        x = 0;
        y += rowHeight + gapY;
        rowHeight = 0;
      }
      offsets.push({ x, y });
      width = Math.max(width, x + piece.width);
      rowHeight = Math.max(rowHeight, piece.height);
      x += piece.width + gapX;
    }
    return { offsets, width, height: y + rowHeight };
  };
  const limits: number[] = [];
  let running = -gapX;
  for (const piece of pieces) limits.push((running += gapX + piece.width));
  const step = Math.max(1, Math.floor(limits.length / 120));
  let best = shelf(limits[limits.length - 1] ?? 0);
  let bestScale = 0;
  for (let i = 0; i < limits.length; i += step) {
    const candidate = shelf(limits[i]!);
    const scale = Math.min(view.width / Math.max(1, candidate.width), view.height / Math.max(1, candidate.height));
    if (scale > bestScale) {
      best = candidate;
      bestScale = scale;
    }
  }
  return best;
}

/**
 * Lays each family (connected component) out on its own and packs them into rows, instead of
 * one very wide strip of unrelated trees; dagre is also much faster on small pieces.
 */
function computeLayout(current: WebviewGraph, engine: Dagre): Layout {
  measureFamily = getComputedStyle(graphSvg).fontFamily || 'sans-serif';
  // Sorted input keeps the drawing stable when the server sends the same graph in another order.
  const nodes = visibleNodes(current).sort((a, b) => a.label.localeCompare(b.label));
  const boxes = new Map(nodes.map((node) => [node.uri, nodeBox(node)]));
  const edges = current.edges.filter((edge) => boxes.has(edge.parent) && boxes.has(edge.child) && edge.parent !== edge.child);
  const pieces = components([...boxes.keys()], edges).map((group) => {
    const members = new Set(group);
    const pieceBoxes = group.map((uri) => boxes.get(uri)!);
    return { boxes: pieceBoxes, ...layoutComponent(engine, pieceBoxes, edges.filter((edge) => members.has(edge.child))) };
  });

  const margin = 20;
  const rect = canvas.getBoundingClientRect();
  const view = rect.width > 0 && rect.height > 0 ? { width: rect.width, height: rect.height } : { width: 1200, height: 800 };
  const packed = packRows(pieces, view, 48, 40);
  const shapes: EdgeShape[] = [];
  pieces.forEach((piece, i) => {
    const x = packed.offsets[i]!.x + margin;
    const y = packed.offsets[i]!.y + margin;
    for (const box of piece.boxes) {
      box.x += x;
      box.y += y;
    }
    for (const shape of piece.edges) {
      shapes.push({ ...shape, points: shape.points.map((p) => ({ x: p.x + x, y: p.y + y })), labelX: shape.labelX + x, labelY: shape.labelY + y });
    }
  });
  return { nodes: boxes, edges: shapes, width: packed.width + 2 * margin, height: packed.height + 2 * margin };
}

/** A polyline through the points with rounded corners. */
function edgePath(points: readonly Point[]): string {
  if (points.length === 0) return '';
  const format = (p: Point): string => `${p.x.toFixed(1)},${p.y.toFixed(1)}`;
  let d = `M${format(points[0]!)}`;
  for (let i = 1; i < points.length - 1; i++) {
    const previous = points[i - 1]!;
    const corner = points[i]!;
    const next = points[i + 1]!;
    const inLength = Math.hypot(corner.x - previous.x, corner.y - previous.y);
    const outLength = Math.hypot(next.x - corner.x, next.y - corner.y);
    const radius = Math.min(16, inLength / 2, outLength / 2);
    if (radius < 0.5) {
      d += ` L${format(corner)}`;
      continue;
    }
    const before = { x: corner.x - ((corner.x - previous.x) / inLength) * radius, y: corner.y - ((corner.y - previous.y) / inLength) * radius };
    const after = { x: corner.x + ((next.x - corner.x) / outLength) * radius, y: corner.y + ((next.y - corner.y) / outLength) * radius };
    d += ` L${format(before)} Q${format(corner)} ${format(after)}`;
  }
  if (points.length > 1) d += ` L${format(points[points.length - 1]!)}`;
  return d;
}

// ---- Drawing -------------------------------------------------------------------------------

function render(): void {
  if (!graph || !dagre) return;
  hideTooltip();
  closeMenu();
  updateToolbar(graph);
  if (graph.nodes.length === 0) {
    layout = undefined;
    edgeLayer.replaceChildren();
    nodeLayer.replaceChildren();
    if (graph.indexing) showEmpty('Looking for checkpoints…', 'The graph appears as checkpoints are read.');
    else showEmpty('No checkpoints in this workspace.', 'Neural Lineage lists .safetensors, .pt, .pth, .ckpt, .bin, .npz and .npy files.');
    return;
  }
  emptyState.hidden = true;
  graphSvg.classList.remove('hidden');
  layout = computeLayout(graph, dagre);
  edgeLayer.replaceChildren(...layout.edges.map(drawEdge));
  nodeLayer.replaceChildren(...[...layout.nodes.values()].map(drawNode));
  applyFocus();
  if (state.autoFit) fitToView(false);
  else applyTransform();
}

function showEmpty(title: string, detail?: string): void {
  emptyState.replaceChildren(html('p', 'empty-title', title));
  if (detail) emptyState.append(html('p', 'empty-detail', detail));
  emptyState.hidden = false;
  graphSvg.classList.add('hidden');
}

function drawNode(box: NodeBox): SVGGElement {
  const { node } = box;
  const group = svg('g', {
    class: node.error !== undefined ? 'node unreadable' : 'node',
    transform: `translate(${(box.x - box.width / 2).toFixed(1)} ${(box.y - box.height / 2).toFixed(1)})`,
    tabindex: 0,
    role: 'button',
    'aria-describedby': tooltip.id,
  });
  group.dataset['uri'] = node.uri;
  group.setAttribute('aria-label', `${node.label}, ${metaText(node)}`);
  group.append(svg('rect', { class: 'node-box', width: box.width, height: box.height, rx: 4 }));
  let y = NODE_PAD_Y;
  for (const line of box.lines) {
    const text = svg('text', { class: line.className, x: NODE_PAD_X, y: (y + line.font.lineHeight * 0.74).toFixed(1) });
    text.textContent = line.text;
    group.append(text);
    y += line.font.lineHeight;
  }
  group.addEventListener('click', (event) => {
    if (suppressClick) return;
    event.stopPropagation();
    if (event.altKey) post({ type: 'reveal', uri: node.uri });
    else if (event.shiftKey) toggleFocus(node.uri);
    else post({ type: 'open', uri: node.uri });
  });
  group.addEventListener('contextmenu', (event) => {
    event.preventDefault();
    event.stopPropagation();
    openMenu(node, event.clientX, event.clientY);
  });
  group.addEventListener('keydown', (event) => onNodeKey(event, node, group));
  group.addEventListener('pointerenter', () => showNodeTooltip(node, group));
  group.addEventListener('pointerleave', hideTooltip);
  group.addEventListener('focus', () => showNodeTooltip(node, group));
  group.addEventListener('blur', hideTooltip);
  return group;
}

function drawEdge(shape: EdgeShape): SVGGElement {
  const { edge } = shape;
  const group = svg('g', { class: `edge rel-${edge.relation}` });
  group.dataset['parent'] = edge.parent;
  group.dataset['child'] = edge.child;
  group.dataset['relation'] = edge.relation;
  const d = edgePath(shape.points);
  group.append(svg('path', { class: 'edge-hit', d }));
  const arrow = `url(#arrow-${edge.relation})`;
  if (edge.relation === 'merged') {
    // A double line: a wide stroke with a background-coloured core; the arrow goes on top.
    group.append(svg('path', { class: 'edge-line', d }), svg('path', { class: 'edge-inner', d, 'marker-end': arrow }));
  } else {
    group.append(svg('path', { class: 'edge-line', d, 'marker-end': arrow }));
  }
  const label = svg('g', { class: 'edge-label', transform: `translate(${shape.labelX.toFixed(1)} ${shape.labelY.toFixed(1)})` });
  label.append(svg('rect', { x: -shape.labelWidth / 2, y: -EDGE_LABEL_HEIGHT / 2, width: shape.labelWidth, height: EDGE_LABEL_HEIGHT, rx: 3 }));
  const text = svg('text', { x: 0, y: 0.5, 'text-anchor': 'middle', 'dominant-baseline': 'middle' });
  text.textContent = shape.label;
  label.append(text);
  group.append(label);
  group.addEventListener('pointerenter', (event) => showEdgeTooltip(edge, event.clientX, event.clientY));
  group.addEventListener('pointerleave', hideTooltip);
  return group;
}

function updateToolbar(current: WebviewGraph): void {
  indexingBadge.hidden = !current.indexing;
  counts.textContent = `${current.nodes.length} checkpoint${current.nodes.length === 1 ? '' : 's'} · ${current.edges.length} link${current.edges.length === 1 ? '' : 's'}`;
  conflictBadge.hidden = current.conflicts.length === 0;
  conflictBadge.textContent = `⚠ ${current.conflicts.length} conflict${current.conflicts.length === 1 ? '' : 's'}`;
  conflictBadge.title = current.conflicts.map((conflict) => conflict.message).join('\n');

  const options: HTMLOptionElement[] = [new Option(`All families (${current.nodes.length})`, 'all')];
  current.families.forEach((members, index) => options.push(new Option(`${index + 1}: ${familyName(current, index)} (${members.length})`, String(index))));
  const loose = current.nodes.filter((node) => node.family === undefined).length;
  if (loose > 0) options.push(new Option(`No family (${loose})`, 'none'));
  familySelect.replaceChildren(...options);
  if (!options.some((option) => option.value === state.family)) state.family = 'all';
  familySelect.value = state.family;
  familySelect.disabled = current.nodes.length === 0;

  const focusOptions = [new Option('None', '')];
  for (const node of [...current.nodes].sort((a, b) => a.label.localeCompare(b.label))) focusOptions.push(new Option(node.label, node.uri));
  focusSelect.replaceChildren(...focusOptions);
  if (state.focus !== null && !nodeById(state.focus)) state.focus = null;
  focusSelect.value = state.focus ?? '';
  focusSelect.disabled = current.nodes.length === 0;
  exportButton.disabled = current.nodes.length === 0;
}

// ---- Focus ---------------------------------------------------------------------------------

function applyFocus(): void {
  const focus = state.focus;
  graphSvg.classList.toggle('has-focus', focus !== null);
  const { ancestors, descendants } = focus === null ? { ancestors: new Set<string>(), descendants: new Set<string>() } : lineage(focus);
  const related = (uri: string): boolean => uri === focus || ancestors.has(uri) || descendants.has(uri);
  for (const element of nodeLayer.querySelectorAll<SVGGElement>('g.node')) {
    const uri = element.dataset['uri'] ?? '';
    element.classList.toggle('focused', uri === focus);
    element.classList.toggle('dimmed', focus !== null && !related(uri));
  }
  for (const element of edgeLayer.querySelectorAll<SVGGElement>('g.edge')) {
    const parent = element.dataset['parent'] ?? '';
    const child = element.dataset['child'] ?? '';
    const onPath =
      ((child === focus || ancestors.has(child)) && ancestors.has(parent)) || ((parent === focus || descendants.has(parent)) && descendants.has(child));
    element.classList.toggle('dimmed', focus !== null && !onPath);
  }
  focusSelect.value = focus ?? '';
}

function setFocus(uri: string | null, fromHost = false): void {
  if (uri !== null && !nodeById(uri)) uri = null;
  const changed = uri !== state.focus;
  state.focus = uri;
  if (uri !== null && layout && !layout.nodes.has(uri)) {
    // The checkpoint is in a family the filter hides: show everything.
    state.family = 'all';
    familySelect.value = 'all';
    render();
  } else {
    applyFocus();
  }
  saveState();
  if (changed && !fromHost) post({ type: 'focusChanged', uri });
}

function toggleFocus(uri: string): void {
  setFocus(state.focus === uri ? null : uri);
}

/** When the host asks for a checkpoint and the fitted graph is too small to read, zoom on it. */
function centreOn(uri: string): void {
  const box = layout?.nodes.get(uri);
  const { width, height } = graphSvg.getBoundingClientRect();
  if (!box || width === 0 || height === 0 || state.zoom >= 0.6) return;
  state.zoom = 1;
  state.panX = width / 2 - box.x;
  state.panY = height / 2 - box.y;
  state.autoFit = false;
  applyTransform();
  saveState();
}

// ---- Zoom and pan --------------------------------------------------------------------------

function applyTransform(): void {
  viewport.setAttribute('transform', `translate(${state.panX.toFixed(2)} ${state.panY.toFixed(2)}) scale(${state.zoom.toFixed(4)})`);
}

function fitToView(byUser: boolean): void {
  if (byUser) state.autoFit = true;
  const rect = graphSvg.getBoundingClientRect();
  if (!layout || rect.width === 0 || rect.height === 0 || layout.width === 0) {
    applyTransform();
    return;
  }
  const margin = 16;
  const { width, height } = layout;
  const place = (available: number): void => {
    state.zoom = clamp(Math.min((rect.width - 2 * margin) / width, (available - 2 * margin) / height, 1.25), MIN_ZOOM, MAX_ZOOM);
    state.panX = (rect.width - width * state.zoom) / 2;
    state.panY = Math.max(margin, (available - height * state.zoom) / 2);
  };
  place(rect.height);
  // When the fitted drawing would run under the open legend (bottom left), fit it above instead.
  const key = legend.open ? legend.getBoundingClientRect() : undefined;
  if (key && state.panX < key.right - rect.left && state.panY + height * state.zoom > key.top - rect.top) {
    place(Math.max(rect.height / 2, key.top - rect.top - 6));
  }
  applyTransform();
  saveState();
}

function zoomAt(x: number, y: number, factor: number): void {
  const zoom = clamp(state.zoom * factor, MIN_ZOOM, MAX_ZOOM);
  const ratio = zoom / state.zoom;
  state.panX = x - (x - state.panX) * ratio;
  state.panY = y - (y - state.panY) * ratio;
  state.zoom = zoom;
  state.autoFit = false;
  applyTransform();
  saveState();
}

function zoomBy(factor: number): void {
  const rect = graphSvg.getBoundingClientRect();
  zoomAt(rect.width / 2, rect.height / 2, factor);
}

graphSvg.addEventListener(
  'wheel',
  (event) => {
    event.preventDefault();
    hideTooltip();
    const rect = graphSvg.getBoundingClientRect();
    const scale = event.deltaMode === WheelEvent.DOM_DELTA_LINE ? 0.05 : event.deltaMode === WheelEvent.DOM_DELTA_PAGE ? 1 : 0.0015;
    zoomAt(event.clientX - rect.left, event.clientY - rect.top, Math.exp(-event.deltaY * scale));
  },
  { passive: false },
);

let drag: { pointer: number; startX: number; startY: number; panX: number; panY: number; moved: boolean } | undefined;
let suppressClick = false;

graphSvg.addEventListener('pointerdown', (event) => {
  if (event.button !== 0) return;
  closeMenu();
  suppressClick = false;
  drag = { pointer: event.pointerId, startX: event.clientX, startY: event.clientY, panX: state.panX, panY: state.panY, moved: false };
});
graphSvg.addEventListener('pointermove', (event) => {
  if (!drag || event.pointerId !== drag.pointer) return;
  const dx = event.clientX - drag.startX;
  const dy = event.clientY - drag.startY;
  if (!drag.moved && Math.hypot(dx, dy) < DRAG_THRESHOLD) return;
  if (!drag.moved) {
    drag.moved = true;
    graphSvg.setPointerCapture(event.pointerId);
    graphSvg.classList.add('panning');
    hideTooltip();
  }
  state.panX = drag.panX + dx;
  state.panY = drag.panY + dy;
  state.autoFit = false;
  applyTransform();
});
const endDrag = (event: PointerEvent): void => {
  if (!drag || event.pointerId !== drag.pointer) return;
  if (drag.moved) {
    suppressClick = true;
    saveState();
    // The click that follows this pointerup belongs to the drag.
    setTimeout(() => (suppressClick = false), 0);
  }
  graphSvg.classList.remove('panning');
  drag = undefined;
};
graphSvg.addEventListener('pointerup', endDrag);
graphSvg.addEventListener('pointercancel', endDrag);

new ResizeObserver(() => {
  if (state.autoFit && layout) fitToView(false);
}).observe(canvas);

// ---- Keyboard ------------------------------------------------------------------------------

function onNodeKey(event: KeyboardEvent, node: WebviewGraphNode, element: SVGGElement): void {
  if (event.key === 'Enter' || event.key === ' ') {
    event.preventDefault();
    post({ type: event.altKey ? 'reveal' : 'open', uri: node.uri });
  } else if (event.key === 'f' || event.key === 'F') {
    event.preventDefault();
    toggleFocus(node.uri);
  } else if (event.key === 'ContextMenu' || (event.key === 'F10' && event.shiftKey)) {
    event.preventDefault();
    const rect = element.getBoundingClientRect();
    openMenu(node, rect.left + 8, rect.bottom);
  }
}

document.addEventListener('keydown', (event) => {
  const target = event.target as HTMLElement | null;
  if (target && (target.tagName === 'SELECT' || target.closest('.menu'))) return;
  if (event.key === 'Escape') {
    hideTooltip();
    if (state.focus !== null) setFocus(null);
  } else if (event.key === '+' || event.key === '=') zoomBy(1.25);
  else if (event.key === '-' || event.key === '_') zoomBy(1 / 1.25);
  else if (event.key === '0') fitToView(true);
});

familySelect.addEventListener('change', () => {
  state.family = familySelect.value;
  state.autoFit = true;
  render();
  saveState();
});
focusSelect.addEventListener('change', () => setFocus(focusSelect.value === '' ? null : focusSelect.value));

// ---- Tooltip and menu ----------------------------------------------------------------------

function row(list: HTMLDListElement, term: string, value: string, className?: string): void {
  list.append(html('dt', undefined, term), html('dd', className, value));
}

function showNodeTooltip(node: WebviewGraphNode, element: Element): void {
  if (drag?.moved || !menu.hidden) return;
  const content: HTMLElement[] = [html('div', 'tooltip-title', node.label)];
  const details = html('dl');
  row(details, 'Path', filePath(node.uri), 'path');
  if (node.format) row(details, 'Format', node.format);
  row(details, 'Size', `${formatBytes(node.sizeBytes)} (${node.sizeBytes.toLocaleString('en-US')} bytes)`);
  if (node.parameters !== undefined) row(details, 'Parameters', `${formatCount(node.parameters)} (${node.parameters.toLocaleString('en-US')})`);
  if (node.family !== undefined && graph) row(details, 'Family', `${node.family + 1}: ${familyName(graph, node.family)}`);
  if (node.error !== undefined) row(details, 'Unreadable', node.error, 'error');
  content.push(details);
  for (const edge of index.parents.get(node.uri) ?? []) {
    const parent = nodeById(edge.parent);
    const section = html('div', 'tooltip-edge');
    section.append(
      html('div', undefined, `${RELATION_NAMES[edge.relation]} from ${parent?.label ?? filePath(edge.parent)} (${percent(edge.confidence)})`),
      html('div', 'evidence', edge.evidence),
    );
    content.push(section);
  }
  for (const conflict of graph?.conflicts ?? []) {
    if (conflict.child === node.uri) content.push(html('div', 'tooltip-conflict', `⚠ ${conflict.message}`));
  }
  const rect = element.getBoundingClientRect();
  placeTooltip(content, rect.right + 8, rect.top);
}

function showEdgeTooltip(edge: WebviewGraphEdge, x: number, y: number): void {
  if (drag?.moved || !menu.hidden) return;
  const parent = nodeById(edge.parent);
  const child = nodeById(edge.child);
  placeTooltip(
    [
      html('div', 'tooltip-title', `${RELATION_NAMES[edge.relation]} (${percent(edge.confidence)})`),
      html('div', undefined, `${parent?.label ?? filePath(edge.parent)} → ${child?.label ?? filePath(edge.child)}`),
      html('div', 'evidence', edge.evidence),
    ],
    x + 12,
    y + 12,
  );
}

function placeTooltip(content: HTMLElement[], x: number, y: number): void {
  tooltip.replaceChildren(...content);
  tooltip.hidden = false;
  const bounds = canvas.getBoundingClientRect();
  const { width, height } = tooltip.getBoundingClientRect();
  let left = x - bounds.left;
  if (left + width > bounds.width - 4) left = Math.max(4, x - bounds.left - width - 24);
  const top = clamp(y - bounds.top, 4, Math.max(4, bounds.height - height - 4));
  tooltip.style.left = `${left}px`;
  tooltip.style.top = `${top}px`;
}

function hideTooltip(): void {
  tooltip.hidden = true;
}

function openMenu(node: WebviewGraphNode, x: number, y: number): void {
  hideTooltip();
  const item = (label: string, action: () => void): HTMLButtonElement => {
    const entry = html('button', 'menu-item', label);
    entry.type = 'button';
    entry.setAttribute('role', 'menuitem');
    entry.addEventListener('click', () => {
      closeMenu(true);
      action();
    });
    return entry;
  };
  menu.replaceChildren(
    item('Open', () => post({ type: 'open', uri: node.uri })),
    item('Reveal in Explorer', () => post({ type: 'reveal', uri: node.uri })),
    item(state.focus === node.uri ? 'Clear focus' : 'Focus lineage', () => toggleFocus(node.uri)),
  );
  menu.dataset['uri'] = node.uri;
  menu.hidden = false;
  const bounds = canvas.getBoundingClientRect();
  const { width, height } = menu.getBoundingClientRect();
  menu.style.left = `${clamp(x - bounds.left, 4, Math.max(4, bounds.width - width - 4))}px`;
  menu.style.top = `${clamp(y - bounds.top, 4, Math.max(4, bounds.height - height - 4))}px`;
  menu.querySelector<HTMLButtonElement>('button')?.focus();
}

function closeMenu(restoreFocus = false): void {
  if (menu.hidden) return;
  const uri = menu.dataset['uri'];
  menu.hidden = true;
  if (restoreFocus && uri) nodeElement(uri)?.focus();
}

function nodeElement(uri: string): SVGGElement | undefined {
  return [...nodeLayer.querySelectorAll<SVGGElement>('g.node')].find((element) => element.dataset['uri'] === uri);
}

menu.addEventListener('keydown', (event) => {
  const items = [...menu.querySelectorAll<HTMLButtonElement>('button')];
  const index = items.indexOf(document.activeElement as HTMLButtonElement);
  if (event.key === 'Escape') {
    event.preventDefault();
    closeMenu(true);
  } else if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
    event.preventDefault();
    const step = event.key === 'ArrowDown' ? 1 : items.length - 1;
    items[(index + step) % items.length]?.focus();
  } else if (event.key === 'Tab') {
    closeMenu(true);
  }
});
document.addEventListener('pointerdown', (event) => {
  if (!menu.hidden && !menu.contains(event.target as Node)) closeMenu();
});

// ---- Export --------------------------------------------------------------------------------

const EXPORTED_PROPERTIES = [
  'fill',
  'fill-opacity',
  'stroke',
  'stroke-width',
  'stroke-dasharray',
  'stroke-linecap',
  'stroke-linejoin',
  'stroke-opacity',
  'opacity',
  'font-family',
  'font-size',
  'font-weight',
] as const;

/**
 * A standalone copy of the drawing: the whole graph (not the current pan and zoom), with the
 * theme's colours written into presentation attributes, since CSS variables mean nothing
 * outside VS Code. Interaction attributes and file URIs are left out.
 */
function exportSvg(): string {
  const width = Math.ceil(layout?.width ?? 0);
  const height = Math.ceil(layout?.height ?? 0);
  // Finish any running fade so the copy gets the final opacities.
  graphSvg.classList.add('exporting');
  const copy = graphSvg.cloneNode(true) as SVGSVGElement;
  const originals = [graphSvg, ...graphSvg.querySelectorAll('*')];
  const copies = [copy, ...copy.querySelectorAll('*')];
  const remove: Element[] = [];
  const styles = new Map<Element, CSSStyleDeclaration>();
  originals.forEach((original, index) => {
    const target = copies[index]!;
    const computed = getComputedStyle(original);
    styles.set(original, computed);
    if (computed.display === 'none' || original.classList.contains('edge-hit')) {
      remove.push(target);
      return;
    }
    // Written where they differ from the parent's (all but opacity are inherited in SVG).
    const parent = original === graphSvg || !original.parentElement ? undefined : styles.get(original.parentElement);
    for (const property of EXPORTED_PROPERTIES) {
      const value = computed.getPropertyValue(property);
      if (!value || value === 'normal') continue;
      if (property === 'opacity' ? value === '1' : parent?.getPropertyValue(property) === value) continue;
      target.setAttribute(property, value);
    }
    for (const name of ['tabindex', 'role', 'aria-label', 'aria-describedby', 'data-uri', 'data-parent', 'data-child']) target.removeAttribute(name);
  });
  graphSvg.classList.remove('exporting');
  for (const element of remove) element.remove();
  copy.querySelector('.viewport')?.removeAttribute('transform');
  copy.setAttribute('xmlns', SVG_NS);
  copy.setAttribute('width', String(width));
  copy.setAttribute('height', String(height));
  copy.setAttribute('viewBox', `0 0 ${width} ${height}`);
  copy.setAttribute('font-family', getComputedStyle(graphSvg).fontFamily);
  copy.classList.remove('hidden', 'panning', 'exporting');
  const title = svg('title');
  title.textContent = 'Model lineage';
  const background = svg('rect', { width, height, fill: getComputedStyle(document.body).backgroundColor });
  copy.insertBefore(background, copy.firstChild);
  copy.insertBefore(title, copy.firstChild);
  return `<?xml version="1.0" encoding="UTF-8"?>\n${new XMLSerializer().serializeToString(copy)}\n`;
}

// ---- Messages ------------------------------------------------------------------------------

function onMessage(message: HostToWebviewMessage): void {
  if (message.type === 'graph') {
    const first = graph === undefined;
    graph = message.graph;
    index = indexGraph(graph);
    if (message.focus !== undefined) {
      state.focus = nodeById(message.focus) ? message.focus : state.focus;
      if (state.family !== 'all' && state.focus !== null && !visibleNodes(graph).some((node) => node.uri === state.focus)) state.family = 'all';
    }
    render();
    if (message.focus !== undefined && state.focus === message.focus) centreOn(message.focus);
    if (first || message.focus !== undefined) saveState();
  } else if (message.type === 'focus') {
    setFocus(message.uri, true);
    if (message.uri !== null) centreOn(message.uri);
  }
}

async function main(): Promise<void> {
  dagre = await import('@dagrejs/dagre');
  window.addEventListener('message', (event: MessageEvent<unknown>) => {
    if (isHostToWebviewMessage(event.data)) onMessage(event.data);
  });
  post({ type: 'ready' });
}

void main();
