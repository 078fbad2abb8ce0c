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
}

export interface StatusView {
  /** Status bar text; `$(...)` are codicons. The words "Code Llama ready" mark readiness. */
  text: string;
  tooltip: string;
  kind: 'starting' | 'loading' | 'ready' | 'error';
}

export class StatusModel {
  private kind: StatusView['kind'] = 'starting';
  private percent: number | undefined;
  private message = '';
  private last: StatusNotification = {};
  private latencyMs: number | undefined;

  /** The server process is up and initialized; the model may still be loading. */
  started(): void {
    if (this.kind === 'starting') this.kind = 'loading';
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
    if (typeof n.total_ms === 'number') this.latencyMs = n.total_ms;
  }

  error(message: string): void {
    this.kind = 'error';
    this.message = message;
  }

  view(): StatusView {
    const l = this.last;
    const details = [
      l.model && `model: ${l.model}`,
      l.device && `device: ${l.device}`,
      l.quantization && `quantization: ${l.quantization}`,
      this.message && `${this.message}`,
    ].filter(Boolean) as string[];
    if (typeof l.total_ms === 'number') {
      details.push(
        `last completion: ${fmtMs(l.total_ms)} total, ${fmtMs(l.time_to_first_token_ms)} to first token, ` +
          `${l.prompt_tokens ?? '?'} prompt tokens (${l.reused_tokens ?? 0} reused), ` +
          `${l.generated_tokens ?? '?'} generated` + (l.stop_reason ? `, stopped: ${l.stop_reason}` : ''),
      );
    }
    const tooltip = details.join('\n') || 'Code Llama language server';
    switch (this.kind) {
      case 'starting':
        return { kind: 'starting', text: '$(sync~spin) Code Llama starting', tooltip };
      case 'loading': {
        const pct = this.percent === undefined ? '' : ` ${this.percent}%`;
        return { kind: 'loading', text: `$(sync~spin) Code Llama loading${pct}`, tooltip };
      }
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
