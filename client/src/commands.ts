import * as vscode from 'vscode';
import type { LanguageClient } from 'vscode-languageclient/node';
import { PARENT_METHODS, type ParentMethod } from '../../server/src/engine/lineage/methods';
import { FindParentRequest, LineageRequest, RescanRequest, type GraphEdge } from '../../server/src/protocol';
import type { LineageModel } from './lineageModel';
import { formatBytes } from '../../server/src/engine/units';
import { nodeName, percent } from './presentation';
import { showComparison, showInspectReport } from './reports';

type CheckpointPick = vscode.QuickPickItem & { uri: string };

const METHOD_DESCRIPTIONS: Readonly<Record<string, string>> = {
  auto: 'weight evidence, or the learned detector where names differ',
  weights: 'fingerprints: inherited values and weight distance',
  detector: 'the learned lineage detector (runs the models)',
};

/** The method for Find Parent: the setting's choice first, then every other. */
async function pickMethod(): Promise<ParentMethod | undefined> {
  const configured = vscode.workspace.getConfiguration('neuralLineage').get<ParentMethod>('method', 'auto');
  const methods = [configured, ...PARENT_METHODS.filter((method) => method !== configured)];
  const picked = await vscode.window.showQuickPick(
    methods.map((method) => ({
      label: method,
      description: METHOD_DESCRIPTIONS[method] ?? (method.endsWith('-approx') ? 'representations with the fine-tuning approximation' : 'representations compared directly'),
    })),
    { title: 'Method' },
  );
  return picked?.label as ParentMethod | undefined;
}

/** The command palette's lineage queries; each also takes a checkpoint URI from menus. */
export function registerCommands(client: LanguageClient, model: LineageModel, showGraph: (focus?: vscode.Uri) => void): vscode.Disposable[] {
  const checkpointPicks = (exclude?: string): CheckpointPick[] =>
    model.graph.nodes
      .filter((node) => !node.error && node.uri !== exclude)
      .map((node) => ({ label: node.label, description: [node.format, formatBytes(node.sizeBytes)].filter(Boolean).join(' · '), uri: node.uri }));

  /** The checkpoint a command acts on: its argument, the active editor's file, or one the user picks. */
  const target = async (argument: unknown, title: string): Promise<vscode.Uri | undefined> => {
    if (argument instanceof vscode.Uri) return argument;
    if (typeof argument === 'string') return vscode.Uri.parse(argument);
    const active = activeCheckpoint();
    if (active && model.node(active)) return active;
    const picked = await vscode.window.showQuickPick(checkpointPicks(), { title, placeHolder: model.graph.nodes.length ? 'Pick a checkpoint' : 'No checkpoints indexed yet' });
    return picked && vscode.Uri.parse(picked.uri);
  };

  const openEdgeList = async (edges: readonly GraphEdge[], pick: 'parent' | 'child', title: string) => {
    if (edges.length === 0) {
      void vscode.window.showInformationMessage(`${title}: none found.`);
      return;
    }
    const items = edges.map((edge): CheckpointPick => {
      const uri = edge[pick];
      return { label: nodeName(model.graph.nodes.find((node) => node.uri === uri), uri), description: `${edge.relation} ${percent(edge.confidence)}`, detail: edge.evidence, uri };
    });
    const chosen = await vscode.window.showQuickPick(items, { title });
    if (chosen) await vscode.commands.executeCommand('vscode.open', vscode.Uri.parse(chosen.uri));
  };

  return [
    vscode.commands.registerCommand('neuralLineage.showGraph', async (argument?: unknown) => {
      showGraph(argument instanceof vscode.Uri ? argument : typeof argument === 'string' ? vscode.Uri.parse(argument) : undefined);
    }),
    vscode.commands.registerCommand('neuralLineage.inspectCheckpoint', async (argument?: unknown) => {
      const uri = await target(argument, 'Inspect Checkpoint');
      if (uri) await showInspectReport(uri);
    }),
    vscode.commands.registerCommand('neuralLineage.findParent', async (argument?: unknown) => {
      const child = await target(argument, 'Find Parent: which checkpoint?');
      if (!child) return;
      const scope = await vscode.window.showQuickPick(
        [
          { label: 'All workspace checkpoints', description: 'rank every other indexed checkpoint', all: true },
          { label: 'Choose candidates…', description: 'the closed-set question: pick the possible parents', all: false },
        ],
        { title: `Find the parent of ${vscode.workspace.asRelativePath(child)}` },
      );
      if (!scope) return;
      let candidates: string[] | undefined;
      if (!scope.all) {
        const picked = await vscode.window.showQuickPick(checkpointPicks(child.toString()), { canPickMany: true, title: 'Candidate parents' });
        if (!picked || picked.length === 0) return;
        candidates = picked.map((item) => item.uri);
      }
      const method = await pickMethod();
      if (!method) return;
      const result = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: 'Neural Lineage: ranking candidate parents', cancellable: true },
        (_progress, token) => client.sendRequest(FindParentRequest, { child: child.toString(), candidates, method }, token),
      );
      const items = result.ranking.map((entry): CheckpointPick => ({
        label: `${entry.candidate === result.parent ? '$(star-full) ' : ''}${vscode.workspace.asRelativePath(vscode.Uri.parse(entry.candidate))}`,
        description: entry.related ? `${percent(entry.probability)}` : 'unrelated',
        detail: entry.relativeDistance === undefined ? undefined : `relative weight distance ${entry.relativeDistance.toPrecision(3)}`,
        uri: entry.candidate,
      }));
      const title = (result.parent ? `Parent: ${vscode.workspace.asRelativePath(vscode.Uri.parse(result.parent))}` : 'No candidate is related to this checkpoint') + ` (${result.method})`;
      const chosen = await vscode.window.showQuickPick(items, { title });
      if (chosen) await vscode.commands.executeCommand('vscode.open', vscode.Uri.parse(chosen.uri));
    }),
    vscode.commands.registerCommand('neuralLineage.showAncestors', async (argument?: unknown) => {
      const uri = await target(argument, 'Show Ancestors');
      if (!uri) return;
      const lineage = await client.sendRequest(LineageRequest, { uri: uri.toString() });
      await openEdgeList(lineage.ancestors, 'parent', `Ancestors of ${vscode.workspace.asRelativePath(uri)}`);
    }),
    vscode.commands.registerCommand('neuralLineage.showDescendants', async (argument?: unknown) => {
      const uri = await target(argument, 'Show Descendants');
      if (!uri) return;
      const lineage = await client.sendRequest(LineageRequest, { uri: uri.toString() });
      await openEdgeList(lineage.descendants, 'child', `Descendants of ${vscode.workspace.asRelativePath(uri)}`);
    }),
    vscode.commands.registerCommand('neuralLineage.compareCheckpoints', async (argument?: unknown, selection?: unknown) => {
      // From the explorer with two files selected, VS Code passes the clicked file and the selection.
      const selected = Array.isArray(selection) ? selection.filter((item): item is vscode.Uri => item instanceof vscode.Uri) : [];
      if (selected.length === 2) return showComparison(selected[0]!, selected[1]!);
      const first = await target(argument, 'Compare: first checkpoint');
      if (!first) return;
      const second = await vscode.window.showQuickPick(checkpointPicks(first.toString()), { title: `Compare ${vscode.workspace.asRelativePath(first)} with…` });
      if (second) await showComparison(first, vscode.Uri.parse(second.uri));
    }),
    vscode.commands.registerCommand('neuralLineage.compareWithParent', async (argument?: unknown) => {
      const uri = await target(argument, 'Compare with Parent');
      if (!uri) return;
      const parent = model.parentEdge(uri);
      if (!parent) {
        void vscode.window.showInformationMessage(`${vscode.workspace.asRelativePath(uri)} has no known parent.`);
        return;
      }
      await showComparison(uri, vscode.Uri.parse(parent.parent));
    }),
    vscode.commands.registerCommand('neuralLineage.rescan', () =>
      vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'Neural Lineage: rescanning' }, () => client.sendRequest(RescanRequest)),
    ),
    vscode.commands.registerCommand('neuralLineage.selectDevice', async () => {
      const configuration = vscode.workspace.getConfiguration('neuralLineage');
      const current = configuration.get<string>('device', 'auto');
      const choices = [
        { label: 'auto', description: 'GPU when one loads, else CPU' },
        { label: 'gpu', description: 'prefer the GPU (falls back to CPU when no GPU provider loads)' },
        { label: 'cpu', description: 'always the CPU' },
      ].map((choice) => ({ ...choice, picked: choice.label === current, detail: choice.label === current ? 'current' : undefined }));
      const picked = await vscode.window.showQuickPick(choices, { title: 'Compute device for lineage detection' });
      if (picked) await configuration.update('device', picked.label, vscode.ConfigurationTarget.Global);
    }),
    vscode.commands.registerCommand('neuralLineage.revealInExplorer', (argument?: unknown) => {
      const uri = argument instanceof vscode.Uri ? argument : typeof argument === 'string' ? vscode.Uri.parse(argument) : (argument as { uri?: string } | undefined)?.uri ? vscode.Uri.parse((argument as { uri: string }).uri) : undefined;
      if (uri) void vscode.commands.executeCommand('revealInExplorer', uri);
    }),
  ];
}

function activeCheckpoint(): vscode.Uri | undefined {
  const tab = vscode.window.tabGroups.activeTabGroup.activeTab?.input;
  if (tab instanceof vscode.TabInputText || tab instanceof vscode.TabInputCustom) return tab.uri;
  return vscode.window.activeTextEditor?.document.uri;
}
