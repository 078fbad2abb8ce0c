/**
 * How to start the language server, from the user's settings. Kept free of the `vscode` module so the
 * unit tests can run under plain Node.
 *
 * No `--stdio` transport flag is added: leaving `transport` out of the server options gives plain stdio,
 * and the server ignores `--stdio` anyway when another client passes it.
 */
import * as os from 'node:os';
import * as fs from 'node:fs';
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

/** Where `command` would be found (as `spawn` would look it up), or undefined when it would fail
 * with ENOENT. Checked before starting, so a missing program gets one message that names the fix. */
export function findExecutable(command: string, envPath: string = process.env.PATH ?? ''): string | undefined {
  const runnable = (p: string) => {
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return fs.statSync(p).isFile();
    } catch {
      return false;
    }
  };
  if (command.includes('/') || command.includes(path.sep)) return runnable(command) ? command : undefined;
  for (const dir of envPath.split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, command);
    if (runnable(candidate)) return candidate;
  }
  return undefined;
}

/** One line for a server program that cannot be started, naming the settings that fix it. */
export function missingServerMessage(s: ServerLaunchSettings, command: string): string {
  if ((s.python ?? '').trim()) {
    return `the Python interpreter "${command}" was not found: set "codellama.server.python" ` +
      '(Code Llama › Server: Python) to a Python that has codellama-lsp installed';
  }
  return `"${command}" was not found on PATH: set "codellama.server.python" (Code Llama › Server: Python) ` +
    'to the Python of the environment where codellama-lsp is installed, or "codellama.server.command" to its path';
}
