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
import { ChatViewProvider, type ChatAnswer } from './chatView';
import { ActionMessages, errorText, OnceNotices, plainMessage } from './messages';
import { findExecutable, missingServerMessage, serverExecutable } from './serverCommand';
import { languageEnabled, RESTART_SETTINGS, serverSettings, type ExtensionSettings } from './settings';
import { StatusModel, type StatusNotification } from './status';

const PREFIX = 'Code Llama';
const ACTIONS: Record<string, { server: string; title: string }> = {
  'codellama.explainSelection': { server: 'codellama.explain', title: 'Explain this' },
  'codellama.fixSelection': { server: 'codellama.fix', title: 'Fix this' },
  'codellama.documentSelection': { server: 'codellama.document', title: 'Document this' },
  'codellama.testsSelection': { server: 'codellama.tests', title: 'Write unit tests' },
};
const SERVER_TITLES = Object.fromEntries(Object.values(ACTIONS).map((a) => [a.server, a.title]));
/** Waiting for a clean shutdown: the server may be in the middle of loading a model. */
const STOP_TIMEOUT_MS = 30000;

let client: LanguageClient | undefined;

function readSettings(): ExtensionSettings & { server: { command: string; python: string; args: string[] } } {
  const c = vscode.workspace.getConfiguration('codellama');
  return {
    model: c.get<string>('model', ''),
    quantization: c.get<string>('quantization', 'auto'),
    contextTokens: c.get<number>('contextTokens', 4096),
    fimMode: c.get<string>('fimMode', 'auto'),
    maxTokens: c.get<number>('maxTokens', 128),
    chatMaxTokens: c.get<number>('chatMaxTokens', 512),
    enable: c.get<Record<string, boolean>>('enable', { '*': true }),
    server: {
      command: c.get<string>('server.command', 'codellama-lsp'),
      python: c.get<string>('server.python', ''),
      args: c.get<string[]>('server.args', []),
    },
  };
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel(PREFIX, { log: true });
  const statusModel = new StatusModel();
  const actionMessages = new ActionMessages();
  const notices = new OnceNotices(context.globalState);
  const bar = vscode.window.createStatusBarItem('codellama.status', vscode.StatusBarAlignment.Right, 100);
  bar.name = PREFIX;
  const render = () => {
    const v = statusModel.view();
    bar.text = v.text;
    bar.tooltip = v.tooltip;
    bar.command = v.kind === 'restricted' ? 'workbench.trust.manage' : 'codellama.showOutput';
    bar.backgroundColor =
      v.kind === 'error' ? new vscode.ThemeColor('statusBarItem.errorBackground')
      : v.kind === 'restricted' ? new vscode.ThemeColor('statusBarItem.warningBackground') : undefined;
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
    try {
      return (await c.sendRequest<ChatAnswer>('codellama/chat', params)) ?? {};
    } catch (err) {
      throw new Error(errorText(err));
    }
  }, context.workspaceState);
  context.subscriptions.push(vscode.window.registerWebviewViewProvider(ChatViewProvider.viewId, chat));

  // The server's window/showMessage: held while an action runs (its failure is shown once), notices once.
  const showServerMessage = (m: { type: number; message: string }) => {
    if (actionMessages.offer(m)) return;
    const text = `${PREFIX}: ${plainMessage(m.message)}`;
    if (m.type === 1) void vscode.window.showErrorMessage(text);
    else if (m.type === 2) void vscode.window.showWarningMessage(text);
    else if (m.type === 3 && notices.firstTime(m.message)) void vscode.window.showInformationMessage(text);
    else output.appendLine(text);
  };

  // Documents edited while the model was not ready: asked again when it is (VS Code asks once per key).
  const editedBeforeReady = new Set<string>();
  context.subscriptions.push(
    vscode.workspace.onDidChangeTextDocument((e) => {
      if (statusModel.state !== 'ready' && e.contentChanges.length > 0) editedBeforeReady.add(e.document.uri.toString());
    }),
  );
  const askAgainIfTyped = () => {
    const editor = vscode.window.activeTextEditor;
    const typed = editor && editedBeforeReady.has(editor.document.uri.toString());
    editedBeforeReady.clear();
    if (!editor || !typed || !languageEnabled(readSettings().enable, editor.document.languageId)) return;
    output.appendLine('model ready: asking again for the suggestion typed for during loading');
    void vscode.commands.executeCommand('editor.action.inlineSuggest.trigger');
  };

  let stopping = false;
  let starting: Promise<void> | undefined;
  const startClient = (): Promise<void> => {
    starting ??= startClientNow().finally(() => (starting = undefined));
    return starting;
  };
  const startClientNow = async () => {
    const s = readSettings();
    const exe = serverExecutable(s.server);
    if (!findExecutable(exe.command)) {
      const why = missingServerMessage(s.server, exe.command);
      output.appendLine(`cannot start the server: ${why}`);
      statusModel.error(`cannot start the server: ${why}`);
      render();
      const open = 'Open Settings';
      void vscode.window.showErrorMessage(`${PREFIX}: ${why}.`, open).then((choice) => {
        if (choice === open) void vscode.commands.executeCommand('workbench.action.openSettings', 'codellama.server');
      });
      return;
    }
    output.appendLine(`starting: ${exe.command} ${exe.args.join(' ')}`);
    const serverOptions: ServerOptions = { command: exe.command, args: exe.args };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      initializationOptions: serverSettings(s),
      outputChannel: output,
      middleware: {
        provideInlineCompletionItems: (document, position, ctx, token, next) =>
          languageEnabled(readSettings().enable, document.languageId) ? next(document, position, ctx, token) : undefined,
        // Our quick fixes and refactorings say whose they are (Copilot's sit beside them).
        provideCodeActions: async (document, range, ctx, token, next) => {
          const actions = await next(document, range, ctx, token);
          for (const a of actions ?? []) if (!a.title.startsWith(PREFIX)) a.title = `${PREFIX}: ${a.title}`;
          return actions;
        },
        // Code actions run the server's commands: through the same path as the palette (progress, one message).
        executeCommand: async (command, args, next) =>
          SERVER_TITLES[command] ? runAction(command, SERVER_TITLES[command], args) : next(command, args),
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
    const c = new LanguageClient('codellama', PREFIX, serverOptions, clientOptions);
    c.onNotification('codellama/status', (n: StatusNotification) => {
      const wasReady = statusModel.state === 'ready';
      statusModel.status(n);
      render();
      if (!wasReady && statusModel.view().kind === 'ready') askAgainIfTyped();
    });
    c.onNotification('codellama/chatChunk', (chunk: { conversationId: string; seq: number; text: string }) =>
      chat.chunk(chunk),
    );
    c.onNotification('window/showMessage', showServerMessage);
    c.onDidChangeState((e) => {
      if (e.newState === State.Stopped && !stopping) {
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

  /** Stop the server and wait for it to exit cleanly (shutdown, exit), then start a new one. A change
   * that arrives meanwhile restarts once more when this one is done (its settings were not read yet). */
  let restarting: Promise<void> | undefined;
  let restartAgain = false;
  const restart = async () => {
    if (restarting) {
      restartAgain = true;
      return restarting;
    }
    restarting = (async () => {
      do {
        restartAgain = false;
        stopping = true;
        statusModel.restarting();
        render();
        if (starting) await starting.catch(() => undefined);
        const old = client;
        client = undefined;
        if (old && old.state !== State.Stopped) {
          try {
            await old.stop(STOP_TIMEOUT_MS);
          } catch (err) {
            output.appendLine(`stopping the server: ${errorText(err)}`);
          }
        }
        stopping = false;
        await startClient();
      } while (restartAgain);
    })().finally(() => (restarting = undefined));
    return restarting;
  };

  const runningClient = async (): Promise<LanguageClient> => {
    if (restarting) await restarting;
    if (starting) await starting;
    if (!vscode.workspace.isTrusted) throw new Error('the folder is not trusted (Restricted Mode)');
    if (!client || client.state === State.Stopped) await startClient();
    if (!client || client.state !== State.Running) throw new Error('the Code Llama server is not running');
    return client;
  };

  /** Run one of the server's actions with a progress notification; a failure is one message, no modal. */
  const runAction = async (server: string, title: string, args: unknown[]): Promise<unknown> => {
    const heading = server === 'codellama.explain' ? explainTitle(args) : undefined;
    actionMessages.begin();
    let failure: string | undefined;
    let result: unknown;
    try {
      const c = await runningClient();
      if (heading) chat.expect(heading);
      result = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `${PREFIX}: ${title}…`, cancellable: true },
        (_progress, token) => c.sendRequest('workspace/executeCommand', { command: server, arguments: args }, token),
      );
      if (heading && result) {
        await vscode.commands.executeCommand(`${ChatViewProvider.viewId}.focus`);
        chat.result(heading, result as ChatAnswer);
      }
    } catch (err) {
      if (heading) chat.forget(heading);
      failure = errorText(err);
      if (/cancel/i.test(failure)) failure = undefined;
    }
    for (const m of actionMessages.end(failure)) showServerMessage(m);
    if (failure) void vscode.window.showWarningMessage(`${PREFIX}: ${title}: ${failure}`);
    return result;
  };

  for (const [id, action] of Object.entries(ACTIONS)) {
    context.subscriptions.push(
      vscode.commands.registerCommand(id, async () => {
        const editor = vscode.window.activeTextEditor;
        if (!editor) {
          void vscode.window.showInformationMessage(`${PREFIX}: ${action.title}: open a file and select some code first.`);
          return;
        }
        const doc = editor.document;
        const sel = editor.selection.isEmpty ? doc.lineAt(editor.selection.active.line).range : editor.selection;
        const c = client;
        const range = c ? c.code2ProtocolConverter.asRange(sel) : {
          start: { line: sel.start.line, character: sel.start.character },
          end: { line: sel.end.line, character: sel.end.character },
        };
        const args: unknown[] = [doc.uri.toString(), range, doc.version];
        if (action.server === 'codellama.fix' && c) {
          const diags = vscode.languages.getDiagnostics(doc.uri).filter((d) => d.range.intersection(sel));
          args.push(await c.code2ProtocolConverter.asDiagnostics(diags));
        }
        await runAction(action.server, action.title, args);
      }),
    );
  }

  context.subscriptions.push(
    vscode.commands.registerCommand('codellama.showChat', () =>
      vscode.commands.executeCommand(`${ChatViewProvider.viewId}.focus`),
    ),
    vscode.commands.registerCommand('codellama.restartServer', () => restart()),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (!e.affectsConfiguration('codellama') || !vscode.workspace.isTrusted) return;
      if (RESTART_SETTINGS.some((key) => e.affectsConfiguration(key))) {
        output.appendLine('server settings changed: restarting the server');
        await restart();
      } else if (client?.state === State.Running) {
        // Applied live by the server (a model change reloads the model in the same process).
        await client.sendNotification('workspace/didChangeConfiguration', {
          settings: { codellama: serverSettings(readSettings()) },
        });
      }
    }),
  );

  if (!vscode.workspace.isTrusted) {
    statusModel.restricted();
    render();
    output.appendLine('Restricted Mode: the server starts when the folder is trusted');
    context.subscriptions.push(vscode.workspace.onDidGrantWorkspaceTrust(() => void startClient()));
    return;
  }
  await startClient();

  function explainTitle(args: unknown[]): string {
    const [uri, range] = args as [string, { start?: { line?: number } } | undefined];
    let where = String(uri ?? '');
    try {
      where = vscode.workspace.asRelativePath(vscode.Uri.parse(where));
    } catch {
      /* keep the URI */
    }
    const line = typeof range?.start?.line === 'number' ? `:${range.start.line + 1}` : '';
    return `Explain this: ${where}${line}`;
  }
}

export async function deactivate(): Promise<void> {
  if (client) await client.stop(STOP_TIMEOUT_MS).catch(() => undefined);
}
