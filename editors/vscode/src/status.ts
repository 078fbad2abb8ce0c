/**
 * What the status bar says. Fed by `$/progress` while the model loads, by the server's `codellama/status`
 * notifications (state changes and per-request stats) and by client errors. Pure, so it is unit-tested.
 */

export interface StatusNotification {
  model?: string;
  device?: string;
  quantization?: string;
  state?: 'loading' | 'ready' | 'error' | string;
  message?: string;
  prompt_tokens?: number;
  reused_tokens?: number;
  generated_tokens?: number;
  forward_passes?: number;
  time_to_first_token_ms?: number;
  total_ms?: number;
  stop_reason?: string;
  /** "model" | "cache" for a suggestion shown; "none" (with `reason`) when nothing was; "chat" for chat. */
  source?: string;
  reason?: string;
  /** The last answered completion's and chat's total time; null while there was none. */
  last_completion_ms?: number | null;
  last_chat_ms?: number | null;
}

export interface StatusView {
  /** Status bar text; `$(...)` are codicons. The words "Code Llama ready" mark readiness. */
  text: string;
  tooltip: string;
  kind: 'starting' | 'loading' | 'ready' | 'error' | 'restricted' | 'restarting';
}

/** A latency the user actually waited for: a completion that produced a suggestion (from the model or
 * the typing-along cache). Empty answers (`not_ready`, cancelled, ...) and chat answers are not one. */
export function completionLatency(n: StatusNotification): number | undefined {
  if (typeof n.total_ms !== 'number' || !Number.isFinite(n.total_ms)) return undefined;
  if (n.reason || n.source === 'none' || n.source === 'chat') return undefined;
  return n.total_ms;
}

export class StatusModel {
  private kind: StatusView['kind'] = 'starting';
  private percent: number | undefined;
  private message = '';
  private last: StatusNotification = {};
  private latencyMs: number | undefined;
  private lastCompletion: StatusNotification | undefined;
  private chatMs: number | undefined;

  /** The server process is up and initialized; the model may still be loading. */
  started(): void {
    if (this.kind === 'starting' || this.kind === 'restarting' || this.kind === 'restricted') this.kind = 'loading';
  }

  progress(kind: 'begin' | 'report' | 'end', percentage?: number, message?: string): void {
    if (this.kind === 'error') return;
    if (kind === 'end') {
      this.percent = undefined;
      return;
    }
    this.kind = this.kind === 'ready' ? 'ready' : 'loading';
    if (typeof percentage === 'number') this.percent = Math.max(0, Math.min(100, Math.round(percentage)));
    if (message) this.message = message;
  }

  status(n: StatusNotification): void {
    this.last = { ...this.last, ...n };
    if (n.state === 'loading') {
      this.kind = 'loading';
      if (n.message) this.message = n.message;
    } else if (n.state === 'error') {
      this.kind = 'error';
      this.message = n.message ?? 'error';
    } else if (n.state === 'ready' || n.state === undefined) {
      this.kind = 'ready';
      this.percent = undefined;
      if (n.message) this.message = n.message;
    }
    const latency = completionLatency(n);
    if (latency !== undefined) this.lastCompletion = { ...n };
    if ('last_completion_ms' in n) {
      // The server's own record (kept across notifications): null until a completion was answered.
      this.latencyMs = typeof n.last_completion_ms === 'number' ? n.last_completion_ms : undefined;
    } else if (latency !== undefined) {
      this.latencyMs = latency;
    }
    if (typeof n.last_chat_ms === 'number') this.chatMs = n.last_chat_ms;
  }

  /** The folder is not trusted: the server (which runs code from the settings) is not started. */
  restricted(): void {
    this.kind = 'restricted';
    this.message = 'Restricted Mode: Code Llama starts its server only in a trusted folder. Click to manage trust.';
  }

  /** A restart on purpose (settings or the command): not an error. */
  restarting(): void {
    this.kind = 'restarting';
    this.percent = undefined;
    this.message = 'restarting the server';
  }

  get state(): StatusView['kind'] {
    return this.kind;
  }

  error(message: string): void {
    this.kind = 'error';
    this.message = message;
  }

  view(): StatusView {
    const l = this.last;
    const c = this.lastCompletion;
    const details = [
      l.model && `model: ${l.model}`,
      l.device && `device: ${l.device}`,
      l.quantization && `quantization: ${l.quantization}`,
      this.message && `${this.message}`,
    ].filter(Boolean) as string[];
    if (c && typeof c.total_ms === 'number') {
      details.push(
        `last completion: ${fmtMs(c.total_ms)} total, ${fmtMs(c.time_to_first_token_ms)} to first token, ` +
          `${c.prompt_tokens ?? '?'} prompt tokens (${c.reused_tokens ?? 0} reused), ` +
          `${c.generated_tokens ?? '?'} generated` + (c.stop_reason ? `, stopped: ${c.stop_reason}` : ''),
      );
    }
    if (this.chatMs !== undefined) details.push(`last chat answer: ${fmtMs(this.chatMs)}`);
    const tooltip = details.join('\n') || 'Code Llama language server';
    switch (this.kind) {
      case 'starting':
        return { kind: 'starting', text: '$(sync~spin) Code Llama starting', tooltip };
      case 'loading': {
        const pct = this.percent === undefined ? '' : ` ${this.percent}%`;
        return { kind: 'loading', text: `$(sync~spin) Code Llama loading${pct}`, tooltip };
      }
      case 'restricted':
        return { kind: 'restricted', text: '$(shield) Code Llama: Restricted Mode', tooltip: this.message };
      case 'restarting':
        return { kind: 'restarting', text: '$(sync~spin) Code Llama restarting', tooltip };
      case 'error':
        return { kind: 'error', text: '$(error) Code Llama error', tooltip: `${this.message}\n${tooltip}` };
      case 'ready': {
        const lat = this.latencyMs === undefined ? '' : ` · ${fmtMs(this.latencyMs)}`;
        return { kind: 'ready', text: `$(check) Code Llama ready${lat}`, tooltip };
      }
    }
  }
}

function fmtMs(ms: number | undefined): string {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '?';
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}
