/**
 * The chat panel: a webview that shows conversations and streams answers as `codellama/chatChunk`
 * notifications arrive. Explain results land here too. The webview runs no remote content and has a strict
 * content security policy; messages are rendered as text (no HTML from the model is interpreted).
 */
import * as vscode from 'vscode';
import { ChatStreams, Conversation, type ChatMessage } from './chatStream';

export interface ChatAnswer {
  conversationId?: string;
  text?: string;
  /** "max_tokens" when the answer was cut at the token limit. */
  stopReason?: string;
  generatedTokens?: number;
}

export type ChatSender = (
  conversation: Conversation,
  messages: { role: string; content: string }[],
) => Promise<ChatAnswer>;

/** Where the panel keeps its history (the workspace's `Memento`): survives a window reload. */
export interface ChatStore {
  get<T>(key: string): T | undefined;
  update(key: string, value: unknown): Thenable<void>;
}

type Entry = { id: string; role: string; text: string };
const STORE_KEY = 'codellama.chat.history';
const MAX_STORED_ENTRIES = 200;

export class ChatViewProvider implements vscode.WebviewViewProvider {
  static readonly viewId = 'codellama.chat';
  private view?: vscode.WebviewView;
  private readonly streams = new ChatStreams();
  private conversation: Conversation;
  /** Entries rendered so far, replayed when the view is (re)created and kept per workspace. */
  private readonly entries: Entry[] = [];
  /** Headings of actions sent but not yet answered (Explain): shown before their first chunk. */
  private readonly pendingTitles: string[] = [];
  private readonly titled = new Set<string>();

  constructor(private readonly send: ChatSender, private readonly store?: ChatStore) {
    const saved = store?.get<{ conversationId: string; messages: ChatMessage[]; entries: Entry[] }>(STORE_KEY);
    this.conversation = new Conversation(saved?.conversationId ?? newId());
    if (saved) {
      this.conversation.messages.push(...(saved.messages ?? []));
      this.entries.push(...(saved.entries ?? []).filter((e) => e.role !== 'pending'));
      for (const e of this.entries) if (e.id.endsWith(':title')) this.titled.add(e.id.slice(0, -':title'.length));
    }
  }

  resolveWebviewView(view: vscode.WebviewView): void {
    this.view = view;
    view.webview.options = { enableScripts: true };
    view.webview.html = html();
    view.webview.onDidReceiveMessage(async (msg: { type: string; text?: string }) => {
      if (msg.type === 'ask' && msg.text) await this.ask(msg.text);
      if (msg.type === 'new') {
        this.conversation = new Conversation(newId());
        this.entries.length = 0;
        this.titled.clear();
        this.post({ type: 'clear' });
        this.save();
      }
      if (msg.type === 'ready') for (const e of this.entries) this.post({ type: 'entry', ...e });
    });
  }

  async ask(text: string): Promise<void> {
    const conv = this.conversation;
    const messages = conv.ask(text);
    this.show({ id: `${conv.id}:q${messages.length}`, role: 'user', text });
    this.show({ id: conv.id, role: 'assistant', text: '' });
    try {
      const answer = await this.send(conv, messages);
      const text = this.streams.finish(conv.id, answer.text ?? '');
      conv.answered(text);
      this.show({ id: conv.id, role: 'assistant', text });
      this.noteCut(conv.id, answer);
    } catch (err) {
      this.show({ id: conv.id, role: 'error', text: String((err as Error)?.message ?? err) });
    }
    this.save();
  }

  /** An action that answers here (Explain) is about to be sent: its heading goes first. */
  expect(title: string): void {
    this.pendingTitles.push(title);
  }

  /** The action failed before answering: forget its heading. */
  forget(title: string): void {
    const i = this.pendingTitles.indexOf(title);
    if (i >= 0) this.pendingTitles.splice(i, 1);
  }

  /** A streamed piece of any conversation (chat, or Explain started from a code action). */
  chunk(c: { conversationId: string; seq: number; text: string }): void {
    this.heading(c.conversationId);
    const text = this.streams.push(c);
    this.show({ id: c.conversationId, role: 'assistant', text });
  }

  /** A finished answer that was not started from this panel (e.g. Explain). */
  result(title: string, r: ChatAnswer): void {
    const id = r.conversationId ?? newId();
    this.heading(id, title);
    this.show({ id, role: 'assistant', text: this.streams.finish(id, r.text ?? '') });
    this.noteCut(id, r);
    this.save();
  }

  /** The heading of a conversation this panel did not start, before any of its text. */
  private heading(id: string, title?: string): void {
    if (id === this.conversation.id || this.titled.has(id)) return;
    if (this.entries.some((e) => e.id === id)) return; // a panel conversation of earlier
    const pending = this.pendingTitles.shift();
    const text = pending ?? title;
    if (text === undefined) return;
    this.titled.add(id);
    this.show({ id: `${id}:title`, role: 'user', text });
  }

  /** Answers cut at the token limit say so, as the CLI does. */
  private noteCut(id: string, r: ChatAnswer): void {
    if (r.stopReason !== 'max_tokens') return;
    const n = typeof r.generatedTokens === 'number' && r.generatedTokens > 0 ? `${r.generatedTokens} tokens` : 'the token limit';
    this.show({ id: `${id}:cut`, role: 'note', text: cutNotice(n) });
  }

  private show(entry: Entry): void {
    const i = this.entries.findIndex((e) => e.id === entry.id && e.role === entry.role);
    if (i >= 0) this.entries[i] = entry;
    else this.entries.push(entry);
    this.post({ type: 'entry', ...entry });
  }

  private save(): void {
    if (!this.store) return;
    void this.store.update(STORE_KEY, {
      conversationId: this.conversation.id,
      messages: this.conversation.messages,
      entries: this.entries.slice(-MAX_STORED_ENTRIES),
    });
  }

  private post(msg: object): void {
    void this.view?.webview.postMessage(msg);
  }
}

/** The sign under an answer cut at the token limit (the CLI prints the same words). */
export function cutNotice(tokens: string): string {
  return `⚠ the answer was cut at ${tokens} (setting: Code Llama › Chat Max Tokens)`;
}

function newId(): string {
  return `vscode-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

function html(): string {
  const nonce = Math.random().toString(36).slice(2);
  return `<!DOCTYPE html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-${nonce}';">
<style>
 body{font-family:var(--vscode-font-family);font-size:var(--vscode-font-size);padding:0 8px}
 .entry{white-space:pre-wrap;margin:6px 0;padding:6px;border-radius:4px}
 .user{background:var(--vscode-input-background)}
 .assistant{font-family:var(--vscode-editor-font-family)}
 .error{color:var(--vscode-errorForeground)}
 .note{color:var(--vscode-editorWarning-foreground);font-style:italic}
 form{display:flex;gap:4px;position:sticky;bottom:0;background:var(--vscode-sideBar-background);padding:6px 0}
 textarea{flex:1;min-height:2.5em;color:var(--vscode-input-foreground);background:var(--vscode-input-background)}
</style></head><body>
<div id="log"></div>
<form id="f"><textarea id="q" placeholder="Ask about your code (Enter sends, Shift+Enter new line)"></textarea>
<button type="submit">Send</button><button type="button" id="n" title="New conversation">New</button></form>
<script nonce="${nonce}">
 const vscode = acquireVsCodeApi();
 const log = document.getElementById('log'), q = document.getElementById('q');
 function key(m){ return 'e-' + m.role + '-' + m.id; }
 window.addEventListener('message', (ev) => {
   const m = ev.data;
   if (m.type === 'clear') { log.textContent = ''; return; }
   if (m.type !== 'entry') return;
   let el = document.getElementById(key(m));
   if (!el) { el = document.createElement('div'); el.id = key(m); el.className = 'entry ' + m.role; log.appendChild(el); }
   el.textContent = m.text;
   el.scrollIntoView({block: 'end'});
 });
 document.getElementById('f').addEventListener('submit', (e) => { e.preventDefault(); send(); });
 document.getElementById('n').addEventListener('click', () => vscode.postMessage({type: 'new'}));
 q.addEventListener('keydown', (e) => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); send(); } });
 function send(){ const t = q.value.trim(); if (!t) return; q.value = ''; vscode.postMessage({type: 'ask', text: t}); }
 vscode.postMessage({type: 'ready'});
</script></body></html>`;
}
