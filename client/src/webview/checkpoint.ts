/**
 * The checkpoint viewer's page: summary, lineage, change against the parent, declared metadata
 * and tensors of one checkpoint. Everything shown comes from the file and is untrusted: text goes
 * in through textContent (never markup), and links only post messages to the host.
 */
import { formatBytes, formatCount } from '../../../server/src/engine/units';
import {
  isCheckpointHostMessage,
  type CheckpointComparison as CompareResult,
  type CheckpointConflict as GraphConflict,
  type CheckpointEdge as GraphEdge,
  type CheckpointHostMessage,
  type CheckpointLayerDifference as LayerDifference,
  type CheckpointLineage as FileLineage,
  type CheckpointReport as InspectReport,
  type CheckpointViewModel,
  type CheckpointWebviewMessage,
} from './checkpointMessages';

// ---------------------------------------------------------------------------------------------
// Host API and state

interface VsCodeApi<State> {
  postMessage(message: CheckpointWebviewMessage): void;
  getState(): State | undefined;
  setState(state: State): void;
}

declare function acquireVsCodeApi(): VsCodeApi<UiState>;

type SortKey = 'index' | 'name' | 'dtype' | 'shape' | 'parameters';

/** What the user chose in the page; kept across reloads of the webview. */
interface UiState {
  filter: string;
  sort: SortKey;
  descending: boolean;
  chartOrder: 'file' | 'change';
  /** Where the page was scrolled to, restored when the webview is shown again. */
  scrollY: number;
}

const vscode = acquireVsCodeApi();
const DEFAULT_UI: UiState = { filter: '', sort: 'index', descending: false, chartOrder: 'file', scrollY: 0 };
const ui: UiState = { ...DEFAULT_UI, ...(vscode.getState() ?? {}) };

function saveUi(): void {
  vscode.setState({ ...ui });
}

let scrollSave = 0;
window.addEventListener(
  'scroll',
  () => {
    window.clearTimeout(scrollSave);
    scrollSave = window.setTimeout(() => {
      ui.scrollY = Math.round(window.scrollY);
      saveUi();
    }, 200);
  },
  { passive: true },
);

/** Up to this many matching tensors are all in the page; more are rendered as they scroll into view. */
const VIRTUAL_THRESHOLD = 500;
/** Models with more tensors than this filter after a pause in typing rather than on every key. */
const FILTER_DEBOUNCE_ABOVE = 20000;
/** Rows rendered above and below the visible ones. */
const VIRTUAL_MARGIN = 30;
/** The rendered range moves in steps of this many rows. */
const VIRTUAL_BLOCK = 20;
/** Descendants listed before "Show all" is pressed. */
const DESCENDANT_LIMIT = 100;
/** Metadata values longer than this are cut, with a button to show the rest. */
const METADATA_VALUE_LIMIT = 400;

interface ViewState {
  model?: CheckpointViewModel;
  lineageStatus: 'loading' | 'ready' | 'unavailable';
  lineageError?: string;
  comparisonPending: boolean;
  comparisonError?: string;
  failed?: string;
}

const state: ViewState = { lineageStatus: 'loading', comparisonPending: false };

/** The page's sections, created per model so that updates replace only what changed. */
interface Sections {
  header: HTMLElement;
  lineage: HTMLElement;
  chart: HTMLElement;
  metadata: HTMLElement;
  tensors: HTMLElement;
}

let sections: Sections | undefined;
let tensorTable: TensorTable | undefined;
let chartObserver: ResizeObserver | undefined;

// ---------------------------------------------------------------------------------------------
// DOM helpers (text only; no markup from data)

type Child = Node | string | number | false | null | undefined;

interface ElementOptions {
  className?: string;
  text?: string;
  title?: string;
  attrs?: Record<string, string>;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, options: ElementOptions = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  if (options.className) element.className = options.className;
  if (options.text !== undefined) element.textContent = options.text;
  if (options.title !== undefined) element.title = options.title;
  for (const [name, value] of Object.entries(options.attrs ?? {})) element.setAttribute(name, value);
  append(element, ...children);
  return element;
}

function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    parent.appendChild(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child);
  }
}

const SVG_NS = 'http://www.w3.org/2000/svg';

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number> = {}, ...children: Child[]): SVGElementTagNameMap[K] {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  append(element, ...children);
  return element;
}

/** Small 16×16 icons drawn with the current text colour. */
const ICONS = {
  error: 'M8 1a7 7 0 1 1 0 14A7 7 0 0 1 8 1zm0 1.2a5.8 5.8 0 1 0 0 11.6A5.8 5.8 0 0 0 8 2.2zM5.6 4.8 8 7.2l2.4-2.4.8.8L8.8 8l2.4 2.4-.8.8L8 8.8l-2.4 2.4-.8-.8L7.2 8 4.8 5.6z',
  warning: 'M8 1.5l7 12.5H1zm0 2.4L3 12.8h10zM7.4 6.5h1.2v3.6H7.4zm0 4.5h1.2v1.2H7.4z',
  graph: 'M3 2.5a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3zm10 0a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3zM8 10.5a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3zM3.9 5.2l3.6 5 .8-.6-3.6-5zm8.2 0-3.6 5-.8-.6 3.6-5z',
  compare: 'M2 3h5v10H2zm1 1v8h3V4zm6-1h5v10H9zm1 1v8h3V4zM7.5 1h1v14h-1z',
  arrow: 'M6 3.5 10.5 8 6 12.5l-.8-.8L8.9 8 5.2 4.3z',
  info: 'M8 1a7 7 0 1 1 0 14A7 7 0 0 1 8 1zm0 1.2a5.8 5.8 0 1 0 0 11.6A5.8 5.8 0 0 0 8 2.2zM7.4 7h1.2v4.6H7.4zm0-2.4h1.2v1.2H7.4z',
} as const;

function icon(name: keyof typeof ICONS, className = ''): SVGSVGElement {
  const element = svg('svg', { viewBox: '0 0 16 16', width: 16, height: 16, class: `icon ${className}`.trim(), 'aria-hidden': 'true', focusable: 'false' });
  element.appendChild(svg('path', { d: ICONS[name], 'fill-rule': 'evenodd' }));
  return element;
}

function button(label: string, onClick: () => void, options: { secondary?: boolean; icon?: keyof typeof ICONS; title?: string; className?: string } = {}): HTMLButtonElement {
  const element = el('button', {
    className: ['button', options.secondary ? 'secondary' : '', options.className ?? ''].filter(Boolean).join(' '),
    title: options.title,
    attrs: { type: 'button' },
  });
  if (options.icon) element.appendChild(icon(options.icon));
  append(element, el('span', { text: label }));
  element.addEventListener('click', onClick);
  return element;
}

function post(message: CheckpointWebviewMessage): void {
  vscode.postMessage(message);
}

// ---------------------------------------------------------------------------------------------
// Formatting

const integer = new Intl.NumberFormat('en-US');

/** Counts and sizes as the hover and the graph write them. */
function compact(value: number): string {
  return Number.isFinite(value) ? formatCount(value) : '—';
}

function bytes(value: number): string {
  return Number.isFinite(value) && value >= 0 ? formatBytes(value) : '—';
}

/** A ratio as a percentage with three significant digits. */
function percent(ratio: number): string {
  if (!Number.isFinite(ratio)) return 'n/a';
  const value = ratio * 100;
  if (value === 0) return '0%';
  if (Math.abs(value) >= 100) return `${Math.round(value)}%`;
  return `${Number(value.toPrecision(3))}%`;
}

const FORMAT_NAMES: Record<string, string> = {
  safetensors: 'safetensors',
  'pytorch-zip': 'PyTorch (zip)',
  'pytorch-tar': 'PyTorch (legacy tar)',
  'pytorch-pickle': 'PyTorch (pickle)',
  npy: 'NumPy .npy',
  npz: 'NumPy .npz',
  onnx: 'ONNX',
  gguf: 'GGUF',
  tflite: 'TFLite',
  tfjs: 'TensorFlow.js',
  'keras-h5': 'Keras (HDF5)',
  keras: 'Keras 3 (.keras)',
};

function formatName(format: string | undefined): string {
  if (!format) return 'Unknown';
  return FORMAT_NAMES[format] ?? format;
}

const RELATIONS: Record<string, { label: string; phrase: string }> = {
  finetune: { label: 'fine-tuned', phrase: 'Fine-tuned from this checkpoint' },
  run: { label: 'same run', phrase: 'A later checkpoint of the training run this one belongs to' },
  adapter: { label: 'adapter', phrase: 'An adapter trained on this checkpoint' },
  quantized: { label: 'quantized', phrase: 'A quantized copy of this checkpoint' },
  fp16: { label: 'half precision', phrase: 'A 16-bit float copy of this checkpoint' },
  pruned: { label: 'pruned', phrase: 'A pruned copy of this checkpoint' },
  converted: { label: 'converted', phrase: 'The same weights, converted or copied' },
  merged: { label: 'merged', phrase: 'Merged from this checkpoint and others' },
  unknown: { label: 'derived', phrase: 'Derived from this checkpoint; how is unclear' },
};

function relationInfo(relation: string): { label: string; phrase: string } {
  return RELATIONS[relation] ?? { label: relation, phrase: relation };
}

function elementCount(shape: readonly number[]): number {
  let count = 1;
  for (const dim of shape) count *= dim;
  return count;
}

function shapeText(shape: readonly number[]): string {
  return shape.length === 0 ? 'scalar' : shape.join(' × ');
}

function basename(path: string): string {
  const parts = path.split(/[\\/]/).filter(Boolean);
  return parts[parts.length - 1] ?? path;
}

/** The decoded path of a URI, or the string itself when it is not one. */
function uriPath(uri: string): string {
  try {
    return decodeURIComponent(new URL(uri).pathname);
  } catch {
    return uri;
  }
}

/** Labels other checkpoints relative to the workspace folder when it can be told, else by their last folders. */
function uriLabel(uri: string): string {
  const path = uriPath(uri);
  const model = state.model;
  const node = model?.lineage?.node;
  if (node?.label && model) {
    const own = uriPath(node.uri);
    const label = node.label.replace(/\\/g, '/');
    if (own.endsWith(`/${label}`)) {
      const root = own.slice(0, own.length - label.length);
      if (path.startsWith(root)) return path.slice(root.length);
    }
  }
  const parts = path.split('/').filter(Boolean);
  return parts.slice(-3).join('/');
}

// ---------------------------------------------------------------------------------------------
// Messages from the host

window.addEventListener('message', (event: MessageEvent<unknown>) => {
  if (!isCheckpointHostMessage(event.data)) return;
  receive(event.data);
});

function receive(message: CheckpointHostMessage): void {
  switch (message.type) {
    case 'model': {
      const previous = state.model;
      // A reload of the same file keeps showing the lineage it had until the new one arrives.
      const keep = message.lineagePending && !message.model.lineage && previous?.lineage && previous.inspect.report.path === message.model.inspect.report.path;
      const model: CheckpointViewModel = keep ? { ...message.model, lineage: previous.lineage, parentComparison: previous.parentComparison } : message.model;
      const scroll = previous ? window.scrollY : ui.scrollY;
      state.failed = undefined;
      state.model = model;
      state.lineageError = undefined;
      state.comparisonError = undefined;
      state.comparisonPending = false;
      state.lineageStatus = model.lineage ? 'ready' : message.lineagePending ? 'loading' : 'unavailable';
      renderPage();
      if (scroll > 0) window.scrollTo(0, scroll);
      break;
    }
    case 'lineage': {
      if (!state.model) return;
      const lineage = message.lineage;
      const keepComparison = message.comparisonPending && state.model.parentComparison?.b === lineage?.parent?.parent;
      state.model = {
        inspect: state.model.inspect,
        lineage,
        parentComparison: message.parentComparison ?? (keepComparison ? state.model.parentComparison : undefined),
      };
      state.lineageStatus = lineage ? 'ready' : 'unavailable';
      state.lineageError = lineage ? undefined : message.error;
      state.comparisonError = lineage ? message.error : undefined;
      state.comparisonPending = message.comparisonPending ?? false;
      renderHeader();
      renderLineage();
      renderChart();
      break;
    }
    case 'failed':
      state.failed = message.message;
      state.model = undefined;
      renderPage();
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Page

const app = document.getElementById('app') ?? document.body.appendChild(el('main', { attrs: { id: 'app' } }));

function renderPage(): void {
  chartObserver?.disconnect();
  chartObserver = undefined;
  tensorTable?.dispose();
  tensorTable = undefined;
  sections = undefined;
  app.replaceChildren();
  app.removeAttribute('aria-busy');

  if (state.failed !== undefined) {
    append(app, errorPanel('This checkpoint could not be inspected', state.failed));
    return;
  }
  const model = state.model;
  if (!model) {
    renderLoading();
    return;
  }
  const report = model.inspect.report;
  sections = {
    header: el('header', { className: 'page-header' }),
    lineage: el('section', { className: 'section lineage', attrs: { 'aria-labelledby': 'lineage-heading' } }),
    chart: el('section', { className: 'section change', attrs: { 'aria-labelledby': 'change-heading' } }),
    metadata: el('section', { className: 'section metadata', attrs: { 'aria-labelledby': 'metadata-heading' } }),
    tensors: el('section', { className: 'section tensors', attrs: { 'aria-labelledby': 'tensors-heading' } }),
  };
  append(app, sections.header);
  if (report.error !== undefined) {
    append(app, errorPanel('This file could not be read', report.error, 'The viewer reads only a checkpoint’s header and index. The file may be truncated, still being written, in an unsupported format, or not a checkpoint.'));
  }
  if (report.warnings.length > 0) append(app, warningList(report.warnings));
  append(app, sections.lineage);
  if (report.error === undefined) append(app, sections.chart, sections.metadata, sections.tensors);
  renderHeader();
  renderLineage();
  if (report.error === undefined) {
    renderChart();
    renderMetadata(report);
    tensorTable = new TensorTable(sections.tensors, report);
  }
}

function renderLoading(): void {
  app.setAttribute('aria-busy', 'true');
  append(app, el('div', { className: 'progress', attrs: { role: 'progressbar', 'aria-label': 'Reading checkpoint' } }, el('div', { className: 'progress-bit' })), el('p', { className: 'muted loading', text: 'Reading checkpoint…' }));
}

function errorPanel(title: string, reason: string, hint?: string): HTMLElement {
  return el(
    'div',
    { className: 'error-panel', attrs: { role: 'alert' } },
    icon('error', 'error-icon'),
    el('div', { className: 'error-body' }, el('h2', { className: 'error-title', text: title }), el('p', { className: 'error-reason', text: reason }), hint && el('p', { className: 'muted', text: hint })),
  );
}

function warningList(warnings: readonly string[]): HTMLElement {
  return el(
    'div',
    { className: 'warning-panel', attrs: { role: 'status' } },
    icon('warning', 'warning-icon'),
    el('ul', { className: 'warning-list' }, ...warnings.map((warning) => el('li', { text: warning }))),
  );
}

function sectionHeading(id: string, title: string, ...extra: Child[]): HTMLElement {
  return el('div', { className: 'section-heading' }, el('h2', { text: title, attrs: { id } }), ...extra);
}

// ---------------------------------------------------------------------------------------------
// Header

function renderHeader(): void {
  const model = state.model;
  if (!sections || !model) return;
  const report = model.inspect.report;
  const node = model.lineage?.node;
  const parent = model.lineage?.parent;
  const ownUri = node?.uri;

  const actions = el('div', { className: 'actions' });
  if (ownUri) append(actions, button('Show in Graph', () => post({ type: 'showInGraph', uri: ownUri }), { secondary: true, icon: 'graph', className: 'show-in-graph' }));
  if (parent) append(actions, button('Compare with Parent', () => post({ type: 'compareWithParent' }), { icon: 'compare', className: 'compare-with-parent' }));

  const title = el(
    'div',
    { className: 'title-block' },
    el('h1', { className: 'file-name', text: basename(report.path), title: report.path }),
    el('div', { className: 'file-path muted', text: node?.label ?? report.path, title: report.path }),
  );

  const stats = el('dl', { className: 'stats' });
  const stat = (label: string, value: Child, detail?: string, className = ''): void => {
    append(stats, el('div', { className: `stat ${className}`.trim() }, el('dt', { text: label }), el('dd', {}, value), detail && el('dd', { className: 'stat-detail muted', text: detail })));
  };
  stat('Format', report.error !== undefined && !report.format ? 'Unreadable' : formatName(report.format), undefined, 'stat-format');
  if (report.error === undefined) {
    stat('Parameters', compact(report.parameterCount), integer.format(report.parameterCount), 'stat-parameters');
    stat('Tensors', integer.format(report.tensorCount), undefined, 'stat-tensors');
    stat('Tensor data', bytes(report.byteSize), node ? `file ${bytes(node.sizeBytes)}` : undefined, 'stat-size');
    stat('Element types', dtypeChips(report), undefined, 'stat-dtypes');
  } else if (node) {
    stat('File size', bytes(node.sizeBytes));
  }

  sections.header.replaceChildren(el('div', { className: 'header-top' }, title, actions), stats);
}

function dtypeChips(report: InspectReport): HTMLElement {
  const chips = el('div', { className: 'chips' });
  const entries = Object.entries(report.dtypes).sort((a, b) => (b[1]?.parameters ?? 0) - (a[1]?.parameters ?? 0));
  if (entries.length === 0) append(chips, el('span', { className: 'muted', text: 'none' }));
  for (const [dtype, usage] of entries) {
    if (!usage) continue;
    const share = report.parameterCount > 0 ? usage.parameters / report.parameterCount : 0;
    append(
      chips,
      el(
        'span',
        { className: 'chip', title: `${integer.format(usage.tensors)} tensors, ${integer.format(usage.parameters)} parameters` },
        el('span', { className: 'chip-name', text: dtype }),
        el('span', { className: 'chip-count', text: entries.length > 1 ? percent(share) : `×${integer.format(usage.tensors)}` }),
      ),
    );
  }
  return chips;
}

// ---------------------------------------------------------------------------------------------
// Lineage

function fileLink(uri: string, className = ''): HTMLElement {
  const link = el('a', { className: `file-link ${className}`.trim(), text: uriLabel(uri), title: `${uriPath(uri)}\nClick to open · ${navigator.platform.startsWith('Mac') ? '⌘' : 'Ctrl'}+click to open to the side`, attrs: { href: '#', 'data-uri': uri } });
  link.addEventListener('click', (event) => {
    event.preventDefault();
    post({ type: 'open', uri, beside: event.ctrlKey || event.metaKey || event.altKey || undefined });
  });
  link.addEventListener('auxclick', (event) => {
    if (event.button !== 1) return;
    event.preventDefault();
    post({ type: 'open', uri, beside: true });
  });
  return link;
}

function graphButton(uri: string): HTMLButtonElement {
  const element = el('button', { className: 'icon-button graph-link', title: 'Show in graph', attrs: { type: 'button', 'aria-label': `Show ${uriLabel(uri)} in the lineage graph`, 'data-uri': uri } }, icon('graph'));
  element.addEventListener('click', () => post({ type: 'showInGraph', uri }));
  return element;
}

function relationBadge(relation: string): HTMLElement {
  const info = relationInfo(relation);
  return el('span', { className: `badge relation relation-${relation.replace(/[^a-z0-9-]/gi, '')}`, text: info.label, title: info.phrase });
}

function confidenceMeter(confidence: number): HTMLElement {
  const value = Number.isFinite(confidence) ? Math.min(1, Math.max(0, confidence)) : 0;
  const fill = el('span', { className: 'meter-fill' });
  fill.style.width = `${(value * 100).toFixed(1)}%`;
  const level = value >= 0.8 ? 'high' : value >= 0.5 ? 'medium' : 'low';
  return el(
    'span',
    { className: `confidence confidence-${level}`, title: `Confidence ${percent(value)}`, attrs: { role: 'meter', 'aria-valuemin': '0', 'aria-valuemax': '1', 'aria-valuenow': String(value), 'aria-label': 'Confidence' } },
    el('span', { className: 'meter' }, fill),
    el('span', { className: 'confidence-value', text: `${Math.round(value * 100)}%` }),
  );
}

function renderLineage(): void {
  const model = state.model;
  if (!sections || !model) return;
  const target = sections.lineage;
  const heading = sectionHeading('lineage-heading', 'Lineage');
  if (state.lineageStatus === 'loading') {
    target.replaceChildren(heading, el('p', { className: 'muted pending', text: 'Looking up this checkpoint’s place in the lineage graph…' }));
    return;
  }
  const lineage = model.lineage;
  if (!lineage) {
    target.replaceChildren(heading, el('p', { className: 'muted', text: state.lineageError ? `Lineage is not available: ${state.lineageError}` : 'Lineage is not available for this file.' }));
    if (model.inspect.report.error !== undefined && !state.lineageError) target.replaceChildren();
    return;
  }
  const own = lineage.node?.uri;
  const rows = el('div', { className: 'lineage-grid' });
  const row = (label: string, ...content: Child[]): void => {
    append(rows, el('div', { className: 'lineage-label muted', text: label }), el('div', { className: 'lineage-value' }, ...content));
  };

  if (lineage.parent) {
    const edge = lineage.parent;
    row(
      'Parent',
      el('div', { className: 'parent-line' }, fileLink(edge.parent, 'parent-link'), graphButton(edge.parent), relationBadge(edge.relation), confidenceMeter(edge.confidence)),
      edge.evidence && el('div', { className: 'evidence muted', text: edge.evidence }),
    );
  } else {
    row('Parent', el('span', { className: 'muted no-parent', text: 'None found in the workspace: trained from scratch, or its parent is elsewhere.' }));
  }

  const chain = ancestorChain(lineage);
  if (chain.length > 1) {
    const crumbs = el('ol', { className: 'ancestry', attrs: { 'aria-label': 'Ancestry, root first' } });
    chain.forEach((uri, index) => {
      const item = el('li', {});
      if (index > 0) append(item, icon('arrow', 'crumb-separator'));
      append(item, fileLink(uri, 'ancestor-link'));
      append(crumbs, item);
    });
    append(crumbs, el('li', {}, icon('arrow', 'crumb-separator'), el('span', { className: 'current', text: own ? uriLabel(own) : basename(model.inspect.report.path) })));
    row('Ancestry', crumbs);
  }

  const tree = descendantTree(lineage);
  if (tree) row(`Descendants (${integer.format(lineage.descendants.length)})`, tree);
  else row('Descendants', el('span', { className: 'muted', text: 'None: no checkpoint in the workspace was derived from this one.' }));

  target.replaceChildren(heading, rows);
  if (lineage.conflicts.length > 0) target.appendChild(conflictList(lineage.conflicts));
}

/** URIs from the root down to the parent, walking the parent and ancestor edges. */
function ancestorChain(lineage: FileLineage): string[] {
  const edges = [...(lineage.parent ? [lineage.parent] : []), ...lineage.ancestors];
  const parentOf = new Map<string, string>();
  for (const edge of edges) if (!parentOf.has(edge.child)) parentOf.set(edge.child, edge.parent);
  const start = lineage.node?.uri ?? lineage.parent?.child;
  if (!start) return [];
  const chain: string[] = [];
  const seen = new Set<string>([start]);
  for (let current = parentOf.get(start); current !== undefined && !seen.has(current); current = parentOf.get(current)) {
    seen.add(current);
    chain.push(current);
  }
  return chain.reverse();
}

function descendantTree(lineage: FileLineage): HTMLElement | undefined {
  if (lineage.descendants.length === 0) return undefined;
  const childrenOf = new Map<string, GraphEdge[]>();
  for (const edge of lineage.descendants) {
    const list = childrenOf.get(edge.parent) ?? [];
    list.push(edge);
    childrenOf.set(edge.parent, list);
  }
  const root = lineage.node?.uri ?? lineage.descendants[0]?.parent;
  if (!root) return undefined;
  const container = el('div', { className: 'descendants' });
  let showAll = false;
  const build = (): void => {
    let budget = showAll ? Infinity : DESCENDANT_LIMIT;
    const seen = new Set<string>([root]);
    const list = (parent: string, depth: number): HTMLElement | undefined => {
      const edges = (childrenOf.get(parent) ?? []).filter((edge) => !seen.has(edge.child));
      if (edges.length === 0 || budget <= 0) return undefined;
      const ul = el('ul', { className: depth === 0 ? 'tree' : 'tree nested', attrs: depth === 0 ? { role: 'tree', 'aria-label': 'Descendants' } : { role: 'group' } });
      for (const edge of edges) {
        if (budget <= 0) break;
        budget--;
        seen.add(edge.child);
        const item = el(
          'li',
          { className: depth === 0 ? 'child' : 'descendant', attrs: { role: 'treeitem' } },
          el('div', { className: 'tree-line' }, fileLink(edge.child, depth === 0 ? 'child-link' : 'descendant-link'), graphButton(edge.child), relationBadge(edge.relation), confidenceMeter(edge.confidence)),
        );
        item.title = edge.evidence;
        append(item, list(edge.child, depth + 1));
        append(ul, item);
      }
      return ul;
    };
    container.replaceChildren();
    append(container, list(root, 0));
    const shown = seen.size - 1;
    if (shown < lineage.descendants.length) {
      append(container, button(`Show all ${integer.format(lineage.descendants.length)} descendants`, () => { showAll = true; build(); }, { secondary: true, className: 'show-all small' }));
    }
  };
  build();
  return container;
}

function conflictList(conflicts: readonly GraphConflict[]): HTMLElement {
  return el(
    'div',
    { className: 'warning-panel conflicts', attrs: { role: 'status' } },
    icon('warning', 'warning-icon'),
    el(
      'div',
      { className: 'conflict-body' },
      el('div', { className: 'conflict-title', text: conflicts.length === 1 ? 'Declared lineage disagrees with the weights' : `${conflicts.length} declarations disagree with the weights` }),
      el(
        'ul',
        { className: 'warning-list' },
        ...conflicts.map((conflict) =>
          el(
            'li',
            { className: 'conflict' },
            el('span', { text: conflict.message }),
            el('span', { className: 'conflict-links muted' }, ' Declared parent: ', fileLink(conflict.declaredParent, 'declared-parent'), conflict.source && ' · declared in ', conflict.source && fileLink(conflict.source, 'declaration-source')),
          ),
        ),
      ),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Change against the parent: one horizontal bar per compared layer (plain SVG)

function renderChart(): void {
  const model = state.model;
  if (!sections || !model || model.inspect.report.error !== undefined) return;
  const target = sections.chart;
  chartObserver?.disconnect();
  chartObserver = undefined;
  const comparison = model.parentComparison;
  const parent = model.lineage?.parent;

  const heading = sectionHeading('change-heading', 'Change against parent');
  // Nothing to compare against: the lineage section already says there is no parent.
  target.hidden = !comparison && state.lineageStatus !== 'loading' && !parent;
  if (!comparison) {
    let text: string;
    if (state.lineageStatus === 'loading') text = 'Waiting for the lineage…';
    else if (!parent) text = 'No parent to compare against.';
    else if (state.comparisonPending) text = 'Comparing the weights with the parent…';
    else if (state.comparisonError) text = `The comparison failed: ${state.comparisonError}`;
    else text = 'No comparison with the parent is available.';
    target.replaceChildren(heading, el('p', { className: `muted${state.comparisonPending ? ' pending' : ''}`, text }));
    return;
  }

  const order = el('div', { className: 'segmented', attrs: { role: 'group', 'aria-label': 'Order of layers' } });
  for (const [value, label] of [['file', 'File order'], ['change', 'Largest change']] as const) {
    const option = el('button', { className: 'segment', text: label, attrs: { type: 'button', 'aria-pressed': String(ui.chartOrder === value), 'data-order': value } });
    option.addEventListener('click', () => {
      ui.chartOrder = value;
      saveUi();
      renderChart();
    });
    append(order, option);
  }
  heading.appendChild(order);

  const rows = chartRows(comparison, model.inspect.report);
  const replacedCount = rows.filter((row) => row.replaced).length;
  const comparedCount = comparison.layers.length;
  const summary = el('p', { className: 'chart-summary' });
  append(
    summary,
    el('span', {}, 'Against ', fileLink(comparison.b, 'compare-parent-link')),
    comparison.relativeDistance !== undefined && el('span', { className: 'summary-item' }, 'overall change ', el('strong', { className: 'overall', text: percent(comparison.relativeDistance) })),
    el('span', { className: 'summary-item', text: `${integer.format(comparedCount)} ${comparedCount === 1 ? 'layer' : 'layers'} compared` }),
    replacedCount > 0 && el('span', { className: 'summary-item replaced-count', text: `${integer.format(replacedCount)} replaced` }),
    state.comparisonPending && el('span', { className: 'summary-item pending', text: 'updating…' }),
  );
  const notes: HTMLElement[] = [];
  if (!comparison.related) notes.push(el('p', { className: 'note warning-text', text: 'By this comparison the weights are not related to the parent; the bars say little.' }));

  if (rows.length === 0) {
    target.replaceChildren(heading, summary, ...notes, el('p', { className: 'muted', text: 'The two checkpoints share no layers to compare.' }));
    return;
  }

  const legend = el(
    'div',
    { className: 'legend muted' },
    el('span', { className: 'legend-item' }, el('span', { className: 'swatch swatch-changed' }), 'relative change ‖this − parent‖ / ‖parent‖ per layer'),
    replacedCount > 0 && el('span', { className: 'legend-item' }, el('span', { className: 'swatch swatch-replaced' }), 'replaced: re-initialised or reshaped'),
  );
  const figure = el('div', { className: 'chart' });
  target.replaceChildren(heading, summary, ...notes, legend, figure);

  let lastWidth = -1;
  const draw = (): void => {
    const width = Math.max(320, Math.floor(figure.clientWidth || target.clientWidth || 720));
    if (width === lastWidth) return;
    lastWidth = width;
    figure.replaceChildren(barChart(rows, width));
  };
  draw();
  if (typeof ResizeObserver !== 'undefined') {
    let frame = 0;
    chartObserver = new ResizeObserver(() => {
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(draw);
    });
    chartObserver.observe(figure);
  }
}

/** One bar: a compared layer, or a replaced one (which the comparison may give no value for). */
interface ChartRow {
  name: string;
  /** ‖this − parent‖ / ‖parent‖; absent for replaced layers left out of the comparison. */
  relativeDistance?: number;
  cosine?: number;
  parameters?: number;
  replaced: boolean;
}

/** Compared and replaced layers, in the file's tensor order. */
function chartRows(comparison: CompareResult, report: InspectReport): ChartRow[] {
  const replaced = new Set(comparison.replaced);
  const rows: ChartRow[] = comparison.layers.map((layer: LayerDifference) => ({ ...layer, replaced: replaced.has(layer.name) }));
  const compared = new Set(comparison.layers.map((layer) => layer.name));
  const tensors = new Map(report.tensors.map((tensor, index) => [tensor.name, { index, parameters: elementCount(tensor.shape) }]));
  for (const name of replaced) {
    if (!compared.has(name)) rows.push({ name, replaced: true, parameters: tensors.get(name)?.parameters });
  }
  const position = (row: ChartRow): number => tensors.get(row.name)?.index ?? Number.MAX_SAFE_INTEGER;
  return rows.map((row, index) => ({ row, index })).sort((a, b) => position(a.row) - position(b.row) || a.index - b.index).map(({ row }) => row);
}

/** A "nice" upper bound (1, 2, 2.5 or 5 times a power of ten) at or above `value`. */
function niceCeil(value: number): number {
  if (!(value > 0) || !Number.isFinite(value)) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value * (1 - 1e-9)) return step * power;
  return 10 * power;
}

function finite(value: number | undefined): value is number {
  return value !== undefined && Number.isFinite(value);
}

function barChart(input: readonly ChartRow[], width: number): SVGSVGElement {
  const rows = [...input];
  if (ui.chartOrder === 'change') {
    // Replaced layers first (their change is total), then by relative change.
    const key = (row: ChartRow): number => (row.replaced ? Infinity : finite(row.relativeDistance) ? row.relativeDistance : -1);
    rows.sort((a, b) => key(b) - key(a) || (b.relativeDistance ?? 0) - (a.relativeDistance ?? 0));
  }
  const dense = rows.length > 200;
  const rowHeight = dense ? 14 : 24;
  const barHeight = dense ? 9 : 14;
  const axisHeight = 24;
  const charWidth = 7.2;
  const longest = rows.reduce((max, row) => Math.max(max, row.name.length), 0);
  const labelWidth = Math.round(Math.min(width * 0.38, Math.max(120, longest * charWidth + 12)));
  const valueWidth = 124;
  const plotX = labelWidth + 12;
  const plotWidth = Math.max(60, width - plotX - valueWidth);
  const height = axisHeight + rows.length * rowHeight + 6;

  const changed = rows.filter((row) => !row.replaced && finite(row.relativeDistance)).map((row) => row.relativeDistance!);
  const all = rows.filter((row) => finite(row.relativeDistance)).map((row) => row.relativeDistance!);
  const domain = niceCeil(Math.max(0, ...(changed.length > 0 ? changed : all)));
  const scale = (value: number): number => (Math.min(value, domain) / domain) * plotWidth;

  const replacedCount = rows.filter((row) => row.replaced).length;
  const root = svg('svg', {
    class: 'bar-chart',
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': `Relative change of ${rows.length} layers against the parent${replacedCount ? `, ${replacedCount} replaced` : ''}`,
  });
  const hatch = svg('pattern', { id: 'replaced-hatch', width: 6, height: 6, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' });
  append(hatch, svg('rect', { class: 'hatch-background', width: 6, height: 6 }), svg('line', { class: 'hatch-line', x1: 0, y1: 0, x2: 0, y2: 6 }));
  append(root, svg('defs', {}, hatch));

  // Axis and grid.
  const axis = svg('g', { class: 'axis' });
  const ticks = 4;
  for (let i = 0; i <= ticks; i++) {
    const value = (domain * i) / ticks;
    const x = plotX + (plotWidth * i) / ticks;
    append(
      axis,
      svg('line', { class: i === 0 ? 'baseline' : 'grid', x1: x, x2: x, y1: axisHeight - 4, y2: height }),
      svg('text', { class: 'tick', x, y: axisHeight - 9, 'text-anchor': i === 0 ? 'start' : i === ticks ? 'end' : 'middle' }, percent(value)),
    );
  }
  append(root, axis);

  const maxChars = Math.max(6, Math.floor((labelWidth - 4) / charWidth));
  rows.forEach((row, index) => {
    const y = axisHeight + index * rowHeight;
    const known = finite(row.relativeDistance);
    const value = known ? row.relativeDistance! : row.replaced ? Infinity : 0;
    const clipped = value > domain;
    const barWidth = Math.max(value > 0 ? 1.5 : 0, scale(value));
    const label = row.name.length > maxChars ? `…${row.name.slice(row.name.length - maxChars + 1)}` : row.name;
    const valueLabel = row.replaced ? (known ? `replaced · ${percent(value)}` : 'replaced') : !known ? 'n/a' : value === 0 ? 'unchanged' : percent(value);
    const details = [
      known ? `relative change ${percent(value)}` : undefined,
      finite(row.cosine) ? `cosine ${row.cosine.toFixed(4)}` : undefined,
      row.parameters !== undefined ? `${integer.format(row.parameters)} parameters` : undefined,
    ].filter(Boolean);
    const tooltip = [row.name, details.join(' · '), row.replaced ? 'replaced: re-initialised or reshaped' : '', 'Click to show its tensors'].filter(Boolean).join('\n');

    const group = svg('g', { class: `row${row.replaced ? ' replaced' : ''}`, 'data-layer': row.name, 'data-value': known ? String(value) : '' });
    append(
      group,
      svg('title', {}, tooltip),
      svg('rect', { class: 'row-background', x: 0, y, width, height: rowHeight }),
      svg('text', { class: 'label', x: labelWidth, y: y + rowHeight / 2, 'text-anchor': 'end', 'dominant-baseline': 'central' }, label),
      svg('rect', { class: `bar${row.replaced ? ' replaced' : ''}`, x: plotX, y: y + (rowHeight - barHeight) / 2, width: barWidth, height: barHeight, rx: 2 }),
      clipped && known && svg('path', { class: 'clip-mark', d: `M${plotX + barWidth - 7} ${y + (rowHeight - barHeight) / 2 - 1} l4 ${barHeight + 2}` }),
      svg('text', { class: `value${row.replaced ? ' replaced' : ''}`, x: plotX + barWidth + 6, y: y + rowHeight / 2, 'dominant-baseline': 'central' }, valueLabel),
    );
    group.addEventListener('click', () => tensorTable?.focusLayer(row.name));
    append(root, group);
  });
  return root;
}

// ---------------------------------------------------------------------------------------------
// Declared metadata

interface MetadataEntry {
  key: string;
  value: unknown;
}

/** Flattens nested plain objects into dotted keys, a few levels deep. */
function flattenMetadata(metadata: Readonly<Record<string, unknown>>): MetadataEntry[] {
  const entries: MetadataEntry[] = [];
  const walk = (prefix: string, value: unknown, depth: number): void => {
    if (value !== null && typeof value === 'object' && !Array.isArray(value) && depth < 4 && Object.keys(value).length > 0) {
      for (const [key, inner] of Object.entries(value as Record<string, unknown>)) walk(prefix ? `${prefix}.${key}` : key, inner, depth + 1);
      return;
    }
    entries.push({ key: prefix, value });
  };
  for (const [key, value] of Object.entries(metadata)) walk(key, value, 0);
  return entries;
}

function metadataValue(value: unknown): { text: string; kind: string } {
  if (value === null) return { text: 'null', kind: 'null' };
  if (value === undefined) return { text: 'undefined', kind: 'null' };
  if (typeof value === 'string') {
    const trimmed = value.trim();
    if ((trimmed.startsWith('{') && trimmed.endsWith('}')) || (trimmed.startsWith('[') && trimmed.endsWith(']'))) {
      try {
        return { text: JSON.stringify(JSON.parse(trimmed), null, 2), kind: 'json' };
      } catch {
        // Not JSON after all: shown as written.
      }
    }
    return { text: value, kind: 'string' };
  }
  if (typeof value === 'number' || typeof value === 'bigint') return { text: String(value), kind: 'number' };
  if (typeof value === 'boolean') return { text: String(value), kind: 'boolean' };
  try {
    const text = JSON.stringify(value);
    return { text: text.length > 120 ? JSON.stringify(value, null, 2) : text, kind: 'json' };
  } catch {
    return { text: String(value), kind: 'string' };
  }
}

function renderMetadata(report: InspectReport): void {
  if (!sections) return;
  const entries = flattenMetadata(report.metadata);
  const heading = sectionHeading('metadata-heading', 'Declared metadata', entries.length > 0 && el('span', { className: 'badge-count', text: integer.format(entries.length) }));
  if (entries.length === 0) {
    sections.metadata.replaceChildren(heading, el('p', { className: 'muted', text: 'This file declares no metadata.' }));
    return;
  }
  const body = el('tbody');
  for (const entry of entries) {
    const { text, kind } = metadataValue(entry.value);
    const cell = el('td', { className: `meta-value kind-${kind}` });
    if (text.length > METADATA_VALUE_LIMIT) {
      const content = el('span', { className: 'value-text', text: `${text.slice(0, METADATA_VALUE_LIMIT)}…` });
      let expanded = false;
      const toggle = button(`Show all ${integer.format(text.length)} characters`, () => {
        expanded = !expanded;
        content.textContent = expanded ? text : `${text.slice(0, METADATA_VALUE_LIMIT)}…`;
        const label = toggle.querySelector('span');
        if (label) label.textContent = expanded ? 'Show less' : `Show all ${integer.format(text.length)} characters`;
      }, { secondary: true, className: 'small expand' });
      append(cell, content, toggle);
    } else {
      append(cell, el('span', { className: 'value-text', text }));
    }
    append(body, el('tr', {}, el('th', { className: 'meta-key', text: entry.key, attrs: { scope: 'row' } }), cell));
  }
  const table = el('table', { className: 'data-table metadata-table' }, el('thead', {}, el('tr', {}, el('th', { text: 'Key', attrs: { scope: 'col' } }), el('th', { text: 'Value', attrs: { scope: 'col' } }))), body);
  sections.metadata.replaceChildren(heading, el('div', { className: 'table-scroll' }, table));
}

// ---------------------------------------------------------------------------------------------
// Tensors: filterable and sortable. Up to VIRTUAL_THRESHOLD matching rows are all in the page;
// beyond that only the rows in view (and a margin) are, between spacers of the right height.

interface TensorRow {
  index: number;
  name: string;
  lowerName: string;
  dtype: string;
  shape: readonly number[];
  shapeText: string;
  parameters: number;
}

class TensorTable {
  private readonly rows: TensorRow[];
  private readonly table: HTMLTableElement;
  private readonly input: HTMLInputElement;
  private readonly countText: HTMLElement;
  private readonly body: HTMLTableSectionElement;
  private readonly footer: HTMLElement;
  private readonly headers = new Map<SortKey, HTMLElement>();
  private readonly topSpacer: HTMLTableRowElement;
  private readonly bottomSpacer: HTMLTableRowElement;
  private pending = 0;
  /** The rows that match, in display order. */
  private shown: TensorRow[] = [];
  private terms: string[] = [];
  private virtual = false;
  private rowHeight = 0;
  private window = { start: 0, end: 0 };
  private frame = 0;
  private readonly onViewportChange = (): void => {
    if (!this.virtual || this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.updateWindow();
    });
  };

  /** A zoom changes the height of rows: measure again. */
  private readonly onResize = (): void => {
    this.rowHeight = 0;
    this.window = { start: 0, end: 0 };
    this.onViewportChange();
  };

  constructor(private readonly section: HTMLElement, report: InspectReport) {
    this.rows = report.tensors.map((tensor, index) => ({
      index,
      name: tensor.name,
      lowerName: tensor.name.toLowerCase(),
      dtype: tensor.dtype,
      shape: tensor.shape,
      shapeText: shapeText(tensor.shape),
      parameters: elementCount(tensor.shape),
    }));
    this.input = el('input', {
      className: 'filter',
      attrs: { type: 'search', placeholder: 'Filter tensors by name', 'aria-label': 'Filter tensors by name', spellcheck: 'false', autocomplete: 'off' },
    });
    this.input.value = ui.filter;
    this.input.addEventListener('input', () => {
      window.clearTimeout(this.pending);
      // Immediate for ordinary models; very large ones wait for a pause in typing.
      if (this.rows.length <= FILTER_DEBOUNCE_ABOVE) this.setFilter(this.input.value);
      else this.pending = window.setTimeout(() => this.setFilter(this.input.value), 150);
    });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && this.input.value) {
        this.input.value = '';
        this.setFilter('');
      }
    });
    this.countText = el('span', { className: 'count muted', attrs: { 'aria-live': 'polite' } });
    this.body = el('tbody');
    this.footer = el('div', { className: 'table-footer' });
    this.topSpacer = this.spacer();
    this.bottomSpacer = this.spacer();

    const headRow = el('tr', { attrs: { 'aria-rowindex': '1' } });
    const columns: [SortKey, string, string][] = [
      ['name', 'Name', 'col-name'],
      ['dtype', 'Type', 'col-dtype'],
      ['shape', 'Shape', 'col-shape'],
      ['parameters', 'Parameters', 'col-parameters numeric'],
    ];
    for (const [key, label, className] of columns) {
      const sortButton = el('button', { className: 'sort', title: `Sort by ${label.toLowerCase()}`, attrs: { type: 'button' } }, el('span', { text: label }), el('span', { className: 'sort-indicator', attrs: { 'aria-hidden': 'true' } }));
      sortButton.addEventListener('click', () => this.setSort(key));
      const th = el('th', { className, attrs: { scope: 'col' } }, sortButton);
      this.headers.set(key, th);
      append(headRow, th);
    }
    const colgroup = el('colgroup', {}, ...columns.map(([, , className]) => el('col', { className: className.split(' ')[0] })));
    this.table = el('table', { className: 'data-table tensor-table' }, colgroup, el('thead', {}, headRow), this.body);

    const heading = sectionHeading('tensors-heading', 'Tensors', el('span', { className: 'badge-count', text: integer.format(this.rows.length) }));
    const toolbar = el('div', { className: 'toolbar' }, el('div', { className: 'filter-box' }, this.input), this.countText);
    section.replaceChildren(heading, toolbar, el('div', { className: 'table-scroll' }, this.table), this.footer);
    window.addEventListener('scroll', this.onViewportChange, { passive: true });
    window.addEventListener('resize', this.onResize);
    this.render();
  }

  dispose(): void {
    window.removeEventListener('scroll', this.onViewportChange);
    window.removeEventListener('resize', this.onResize);
    cancelAnimationFrame(this.frame);
    window.clearTimeout(this.pending);
  }

  /** Filters the table to one layer's tensors and scrolls to it (from a click on the chart). */
  focusLayer(name: string): void {
    this.input.value = name;
    this.setFilter(name);
    this.section.scrollIntoView({ behavior: 'smooth', block: 'start' });
    this.input.focus({ preventScroll: true });
  }

  private setFilter(filter: string): void {
    ui.filter = filter;
    saveUi();
    this.render();
  }

  private setSort(key: SortKey): void {
    if (ui.sort === key) {
      if (ui.descending) {
        ui.sort = 'index';
        ui.descending = false;
      } else {
        ui.descending = true;
      }
    } else {
      ui.sort = key;
      ui.descending = key === 'parameters';
    }
    saveUi();
    this.render();
  }

  private render(): void {
    this.terms = ui.filter.toLowerCase().split(/\s+/).filter(Boolean);
    const terms = this.terms;
    const matching = terms.length === 0 ? [...this.rows] : this.rows.filter((row) => terms.every((term) => row.lowerName.includes(term)));
    this.shown = this.sort(matching);
    this.virtual = this.shown.length > VIRTUAL_THRESHOLD;
    this.table.setAttribute('aria-rowcount', String(this.shown.length + 1));
    this.window = { start: 0, end: 0 };
    if (this.virtual) {
      this.updateWindow();
    } else {
      this.body.replaceChildren(this.rowElements(0, this.shown.length));
    }

    this.countText.textContent = terms.length === 0 ? `${integer.format(this.rows.length)} tensors` : `${integer.format(matching.length)} of ${integer.format(this.rows.length)} match`;
    this.footer.replaceChildren();
    if (matching.length === 0) {
      append(this.footer, el('p', { className: 'muted empty', text: this.rows.length === 0 ? 'This file holds no tensors.' : `No tensor name contains “${ui.filter.trim()}”.` }));
    }
    for (const [key, th] of this.headers) {
      th.setAttribute('aria-sort', ui.sort === key ? (ui.descending ? 'descending' : 'ascending') : 'none');
      th.classList.toggle('sorted', ui.sort === key);
    }
  }

  /** Renders the rows in view (with a margin) between spacers standing in for the rest. */
  private updateWindow(): void {
    const total = this.shown.length;
    if (!this.rowHeight) {
      // Measure one real row; every row has the same height (cells do not wrap).
      this.body.replaceChildren(this.rowElements(0, Math.min(total, 1)));
      this.rowHeight = this.body.firstElementChild?.getBoundingClientRect().height ?? 0;
    }
    const height = this.rowHeight || 24;
    const top = this.body.getBoundingClientRect().top;
    const viewport = window.innerHeight || 800;
    const block = VIRTUAL_BLOCK;
    const first = Math.max(0, Math.floor(Math.floor(-top / height - VIRTUAL_MARGIN) / block) * block);
    const last = Math.min(total, Math.ceil(Math.ceil((viewport - top) / height + VIRTUAL_MARGIN) / block) * block);
    const start = Math.min(first, total);
    const end = Math.max(start, last);
    if (start === this.window.start && end === this.window.end && this.body.firstElementChild === this.topSpacer) return;
    this.window = { start, end };
    this.topSpacer.style.height = `${start * height}px`;
    this.bottomSpacer.style.height = `${(total - end) * height}px`;
    this.body.replaceChildren(this.topSpacer, this.rowElements(start, end), this.bottomSpacer);
  }

  private spacer(): HTMLTableRowElement {
    const row = el('tr', { className: 'spacer', attrs: { 'aria-hidden': 'true' } });
    row.appendChild(el('td', { attrs: { colspan: '4' } }));
    return row;
  }

  private rowElements(start: number, end: number): DocumentFragment {
    const fragment = document.createDocumentFragment();
    for (let i = start; i < end; i++) {
      const row = this.shown[i]!;
      const tr = document.createElement('tr');
      tr.className = i % 2 === 1 ? 'stripe' : '';
      tr.setAttribute('aria-rowindex', String(i + 2));
      const name = tr.insertCell();
      name.className = 'col-name';
      name.title = row.name;
      name.appendChild(highlight(row.name, this.terms));
      const dtype = tr.insertCell();
      dtype.className = 'col-dtype';
      const chip = dtype.appendChild(document.createElement('span'));
      chip.className = 'dtype';
      chip.textContent = row.dtype;
      const shape = tr.insertCell();
      shape.className = 'col-shape';
      shape.textContent = row.shapeText;
      shape.title = row.shapeText;
      const parameters = tr.insertCell();
      parameters.className = 'col-parameters numeric';
      parameters.textContent = integer.format(row.parameters);
      fragment.appendChild(tr);
    }
    return fragment;
  }

  private sort(rows: TensorRow[]): TensorRow[] {
    const direction = ui.descending ? -1 : 1;
    const compareBy: Record<SortKey, (a: TensorRow, b: TensorRow) => number> = {
      index: (a, b) => a.index - b.index,
      name: (a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }),
      dtype: (a, b) => a.dtype.localeCompare(b.dtype),
      shape: (a, b) => a.shape.length - b.shape.length || a.parameters - b.parameters,
      parameters: (a, b) => a.parameters - b.parameters,
    };
    const compare = compareBy[ui.sort] ?? compareBy.index;
    return ui.sort === 'index' && !ui.descending ? rows : rows.sort((a, b) => direction * compare(a, b) || a.index - b.index);
  }
}

/** The name with every occurrence of the filter terms wrapped in <mark> (as text nodes). */
function highlight(name: string, terms: readonly string[]): DocumentFragment {
  const fragment = document.createDocumentFragment();
  if (terms.length === 0) {
    fragment.appendChild(document.createTextNode(name));
    return fragment;
  }
  const lower = name.toLowerCase();
  if (lower.length !== name.length) {
    fragment.appendChild(document.createTextNode(name));
    return fragment;
  }
  const marked = new Uint8Array(name.length);
  for (const term of terms) {
    for (let at = lower.indexOf(term); at !== -1; at = lower.indexOf(term, at + 1)) marked.fill(1, at, at + term.length);
  }
  let start = 0;
  for (let i = 1; i <= name.length; i++) {
    if (i === name.length || marked[i] !== marked[start]) {
      const text = name.slice(start, i);
      fragment.appendChild(marked[start] ? el('mark', { text }) : document.createTextNode(text));
      start = i;
    }
  }
  return fragment;
}

// ---------------------------------------------------------------------------------------------

renderPage();
post({ type: 'ready' });
