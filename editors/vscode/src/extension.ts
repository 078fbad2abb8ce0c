/**
 * Code Llama for VS Code: a thin client. Starts `codellama-lsp serve` over stdio through
 * vscode-languageclient (11.x registers the LSP 3.18 inline completion provider by default), shows the
 * server's state in the status bar, adds Explain/Fix/Document/Tests commands and a streaming chat view.
 * All model work happens in the server; nothing here talks to the network.
 */
import * as vscode from 'vscode';
import {
  LanguageClient,
  type LanguageClientOptions,
  type ServerOptions,
  State,
} from 'vscode-languageclient/node';
import { ChatViewProvider } from './chatView';
import { serverExecutable } from './serverCommand';
import { languageEnabled, serverSettings, type ExtensionSettings } from './settings';
import { StatusModel, type StatusNotification } from './status';

const ACTIONS: Record<string, { server: string; title: string }> = {
  'codellama.explainSelection': { server: 'codellama.explain', title: 'Explain this' },
  'codellama.fixSelection': { server: 'codellama.fix', title: 'Fix this' },
  'codellama.documentSelection': { server: 'codellama.document', title: 'Document this' },
  'codellama.testsSelection': { server: 'codellama.tests', title: 'Write unit tests' },
};

let client: LanguageClient | undefined;

function readSettings(): ExtensionSettings & { server: { command: string; python: string; args: string[] } } {
  const c = vscode.workspace.getConfiguration('codellama');
  return {
    model: c.get<string>('model', ''),
    quantization: c.get<string>('quantization', 'auto'),
    contextTokens: c.get<number>('contextTokens', 4096),
    fimMode: c.get<string>('fimMode', 'spm'),
    maxTokens: c.get<number>('maxTokens', 128),
    enable: c.get<Record<string, boolean>>('enable', { '*': true }),
    server: {
      command: c.get<string>('server.command', 'codellama-lsp'),
      python: c.get<string>('server.python', ''),
      args: c.get<string[]>('server.args', []),
    },
  };
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel('Code Llama', { log: true });
  const statusModel = new StatusModel();
  const bar = vscode.window.createStatusBarItem('codellama.status', vscode.StatusBarAlignment.Right, 100);
  bar.name = 'Code Llama';
  bar.command = 'codellama.showOutput';
  const render = () => {
    const v = statusModel.view();
    bar.text = v.text;
    bar.tooltip = v.tooltip;
    bar.backgroundColor = v.kind === 'error' ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
  };
  render();
  bar.show();
  context.subscriptions.push(output, bar, vscode.commands.registerCommand('codellama.showOutput', () => output.show()));

  const chat = new ChatViewProvider(async (conversation, messages) => {
    const c = await runningClient();
    const editor = vscode.window.activeTextEditor;
    const params: Record<string, unknown> = { conversationId: conversation.id, messages };
    if (editor) {
      params.textDocument = { uri: editor.document.uri.toString() };
      if (!editor.selection.isEmpty) params.range = c.code2ProtocolConverter.asRange(editor.selection);
    }
    const r = await c.sendRequest<{ conversationId: string; text: string }>('codellama/chat', params);
    return r?.text ?? '';
  });
  context.subscriptions.push(vscode.window.registerWebviewViewProvider(ChatViewProvider.viewId, chat));

  const startClient = async () => {
    const s = readSettings();
    const exe = serverExecutable(s.server);
    output.appendLine(`starting: ${exe.command} ${exe.args.join(' ')}`);
    const serverOptions: ServerOptions = { command: exe.command, args: exe.args };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      initializationOptions: serverSettings(s),
      outputChannel: output,
      middleware: {
        provideInlineCompletionItems: (document, position, ctx, token, next) =>
          languageEnabled(readSettings().enable, document.languageId) ? next(document, position, ctx, token) : undefined,
        handleWorkDoneProgress: (token, params, next) => {
          statusModel.progress(params.kind, 'percentage' in params ? params.percentage : undefined, params.message);
          render();
          next(token, params);
        },
        workspace: {
          // Pulls of the "codellama" section get the server's view of the settings, not the raw object.
          configuration: async (params, token, next) => {
            const answers = await next(params, token);
            if (!Array.isArray(answers)) return answers;
            return params.items.map((item, i) => (item.section === 'codellama' ? serverSettings(readSettings()) : answers[i]));
          },
        },
      },
    };
    const c = new LanguageClient('codellama', 'Code Llama', serverOptions, clientOptions);
    c.onNotification('codellama/status', (n: StatusNotification) => {
      statusModel.status(n);
      render();
    });
    c.onNotification('codellama/chatChunk', (chunk: { conversationId: string; seq: number; text: string }) =>
      chat.chunk(chunk),
    );
    c.onDidChangeState((e) => {
      if (e.newState === State.Stopped) {
        statusModel.error('server stopped (see the Code Llama output)');
        render();
      }
    });
    client = c;
    try {
      await c.start();
      statusModel.started();
    } catch (err) {
      statusModel.error(`server failed to start: ${(err as Error)?.message ?? err}`);
      output.appendLine(String(err));
    }
    render();
  };

  const runningClient = async (): Promise<LanguageClient> => {
    if (!client || client.state === State.Stopped) await startClient();
    if (!client || client.state !== State.Running) throw new Error('Code Llama server is not running');
    return client;
  };

  for (const [id, action] of Object.entries(ACTIONS)) {
    context.subscriptions.push(
      vscode.commands.registerCommand(id, async () => {
        const editor = vscode.window.activeTextEditor;
        if (!editor) return;
        const c = await runningClient();
        const doc = editor.document;
        const sel = editor.selection.isEmpty ? doc.lineAt(editor.selection.active.line).range : editor.selection;
        const args: unknown[] = [doc.uri.toString(), c.code2ProtocolConverter.asRange(sel), doc.version];
        if (action.server === 'codellama.fix') {
          const diags = vscode.languages.getDiagnostics(doc.uri).filter((d) => d.range.intersection(sel));
          args.push(await c.code2ProtocolConverter.asDiagnostics(diags));
        }
        const result = await vscode.window.withProgress(
          { location: vscode.ProgressLocation.Window, title: `Code Llama: ${action.title}` },
          () => c.sendRequest<{ conversationId?: string; text?: string } | null>('workspace/executeCommand', {
            command: action.server,
            arguments: args,
          }),
        );
        if (action.server === 'codellama.explain' && result) {
          await vscode.commands.executeCommand(`${ChatViewProvider.viewId}.focus`);
          chat.result(`${action.title}: ${vscode.workspace.asRelativePath(doc.uri)}:${sel.start.line + 1}`, result);
        }
      }),
    );
  }

  context.subscriptions.push(
    vscode.commands.registerCommand('codellama.showChat', () =>
      vscode.commands.executeCommand(`${ChatViewProvider.viewId}.focus`),
    ),
    vscode.commands.registerCommand('codellama.restartServer', async () => {
      if (client) await client.stop().catch(() => undefined);
      client = undefined;
      await startClient();
    }),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (!e.affectsConfiguration('codellama')) return;
      if (e.affectsConfiguration('codellama.server')) {
        await vscode.commands.executeCommand('codellama.restartServer');
      } else if (client?.state === State.Running) {
        await client.sendNotification('workspace/didChangeConfiguration', {
          settings: { codellama: serverSettings(readSettings()) },
        });
      }
    }),
  );

  await startClient();
}

export async function deactivate(): Promise<void> {
  if (client) await client.stop().catch(() => undefined);
}
