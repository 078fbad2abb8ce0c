/**
 * Translate the extension's `codellama.*` settings into the server's settings (camelCase keys that the
 * server maps onto `codellama_lsp.config.Settings`). Client-only settings (how to launch the server, the
 * per-language switch object) never reach the server as such: the server reports unknown keys as errors.
 */

export interface ExtensionSettings {
  model?: string;
  quantization?: string;
  contextTokens?: number;
  fimMode?: string;
  maxTokens?: number;
  chatMaxTokens?: number;
  enable?: Record<string, boolean>;
}

export type ServerSettings = Record<string, string | number | string[]>;

export function serverSettings(s: ExtensionSettings): ServerSettings {
  const out: ServerSettings = {};
  if (s.model && s.model.trim()) out.model = s.model.trim();
  if (s.quantization) out.quantization = s.quantization;
  if (typeof s.contextTokens === 'number') out.contextTokens = s.contextTokens;
  if (s.fimMode) out.fimMode = s.fimMode;
  if (typeof s.maxTokens === 'number') out.maxTokens = s.maxTokens;
  if (typeof s.chatMaxTokens === 'number') out.chatMaxTokens = s.chatMaxTokens;
  out.disabledLanguages = disabledLanguages(s.enable);
  return out;
}

/** Language ids switched off explicitly (`"python": false`); `*` is not a language. */
export function disabledLanguages(enable: Record<string, boolean> | undefined): string[] {
  return Object.entries(enable ?? {})
    .filter(([lang, on]) => lang !== '*' && on === false)
    .map(([lang]) => lang)
    .sort();
}

/** Whether inline completions are wanted for `languageId`: its own entry, else `*`, else on. */
export function languageEnabled(enable: Record<string, boolean> | undefined, languageId: string): boolean {
  const table = enable ?? {};
  if (Object.prototype.hasOwnProperty.call(table, languageId)) return table[languageId] !== false;
  if (Object.prototype.hasOwnProperty.call(table, '*')) return table['*'] !== false;
  return true;
}

/** Settings whose change needs a new server process (how it is started); every other `codellama.*`
 * setting reaches the running server through `workspace/didChangeConfiguration`. */
export const RESTART_SETTINGS = ['codellama.server.command', 'codellama.server.python', 'codellama.server.args'];
