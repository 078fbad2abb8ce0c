/**
 * How to start the language server, from the user's settings. Kept free of the `vscode` module so the
 * unit tests can run under plain Node.
 *
 * No `--stdio` transport flag is added: leaving `transport` out of the server options gives plain stdio,
 * and the server ignores `--stdio` anyway when another client passes it.
 */
import * as os from 'node:os';
import * as path from 'node:path';

export interface ServerLaunchSettings {
  /** Executable that understands `serve` (the `codellama-lsp` console script). */
  command: string;
  /** Optional Python interpreter; when set it wins and runs `-m codellama_lsp.cli serve`. */
  python: string;
  /** Extra arguments appended after `serve`. */
  args: string[];
}

export interface ServerExecutable {
  command: string;
  args: string[];
}

/** Expand a leading `~` the way a shell would, since settings are often copied from shell snippets. */
export function expandHome(p: string, home: string = os.homedir()): string {
  if (p === '~') return home;
  if (p.startsWith('~/')) return path.join(home, p.slice(2));
  return p;
}

export function serverExecutable(s: ServerLaunchSettings, home?: string): ServerExecutable {
  const extra = (s.args ?? []).filter((a) => typeof a === 'string' && a.length > 0);
  const python = (s.python ?? '').trim();
  if (python) {
    return { command: expandHome(python, home), args: ['-m', 'codellama_lsp.cli', 'serve', ...extra] };
  }
  const command = (s.command ?? '').trim() || 'codellama-lsp';
  return { command: expandHome(command, home), args: ['serve', ...extra] };
}
