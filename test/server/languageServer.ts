import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  createProtocolConnection,
  InitializedNotification,
  InitializeRequest,
  StreamMessageReader,
  StreamMessageWriter,
  type ProtocolConnection,
} from 'vscode-languageserver-protocol/node';
import { REPO_ROOT } from '../helpers';

/**
 * Starts the bundled language server over stdio on one workspace folder, as VS Code would,
 * answering its configuration requests with `settings`. `listen` registers handlers before
 * the first message flows; `clientCapabilities` adds to the capabilities the client declares.
 */
export async function startLanguageServer(
  folder: string,
  settings: Record<string, unknown>,
  listen: (connection: ProtocolConnection) => void = () => undefined,
  clientCapabilities: Record<string, unknown> = {},
): Promise<{ connection: ProtocolConnection; stop: () => void }> {
  const server = spawn(process.execPath, [path.join(REPO_ROOT, 'dist', 'server.js'), '--stdio'], { stdio: 'pipe' });
  const connection = createProtocolConnection(new StreamMessageReader(server.stdout!), new StreamMessageWriter(server.stdin!));
  connection.onRequest('workspace/configuration', () => [settings]);
  listen(connection);
  connection.listen();
  const uri = pathToFileURL(folder).toString();
  await connection.sendRequest(InitializeRequest.type, {
    processId: process.pid,
    rootUri: uri,
    workspaceFolders: [{ uri, name: path.basename(folder) }],
    capabilities: { workspace: { configuration: true }, ...clientCapabilities },
  });
  await connection.sendNotification(InitializedNotification.type, {});
  return {
    connection,
    stop: () => {
      connection.dispose();
      server.kill();
    },
  };
}
