/**
 * The chat panel: a webview that shows conversations and streams answers as `codellama/chatChunk`
 * notifications arrive. Explain results land here too. The webview runs no remote content and has a strict
 * content security policy; messages are rendered as text (no HTML from the model is interpreted).
 */
import * as vscode from 'vscode';
import { ChatStreams, Conversation } from './chatStream';

export type ChatSender = (conversation: Conversation, messages: { role: string; content: string }[]) => Promise<string>;

export class ChatViewProvider implements vscode.WebviewViewProvider {
  static readonly viewId = 'codellama.chat';
  private view?: vscode.WebviewView;
  private readonly streams = new ChatStreams();
  private conversation: Conversation;
  /** Entries rendered so far, replayed when the view is (re)created. */
  private readonly entries: { id: string; role: string; text: string }[] = [];

  constructor(private readonly send: ChatSender) {
    this.conversation = new Conversation(newId());
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
        this.post({ type: 'clear' });
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
      conv.answered(this.streams.finish(conv.id, answer));
      this.show({ id: conv.id, role: 'assistant', text: answer });
    } catch (err) {
      this.show({ id: conv.id, role: 'error', text: String((err as Error)?.message ?? err) });
    }
  }

  /** A streamed piece of any conversation (chat, or Explain started from a code action). */
  chunk(c: { conversationId: string; seq: number; text: string }): void {
    const text = this.streams.push(c);
    this.show({ id: c.conversationId, role: 'assistant', text });
  }

  /** A finished answer that was not started from this panel (e.g. Explain). */
  result(title: string, r: { conversationId?: string; text?: string }): void {
    const id = r.conversationId ?? newId();
    if (!this.entries.some((e) => e.id === `${id}:title`)) this.show({ id: `${id}:title`, role: 'user', text: title });
    this.show({ id, role: 'assistant', text: this.streams.finish(id, r.text ?? '') });
  }

  private show(entry: { id: string; role: string; text: string }): void {
    const i = this.entries.findIndex((e) => e.id === entry.id && e.role === entry.role);
    if (i >= 0) this.entries[i] = entry;
    else this.entries.push(entry);
    this.post({ type: 'entry', ...entry });
  }

  private post(msg: object): void {
    void this.view?.webview.postMessage(msg);
  }
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
