/**
 * Which messages reach the user, and how often. Kept free of the `vscode` module so it is unit-tested.
 *
 * - A failed action is reported once: the server also sends `window/showMessage` for it (for editors
 *   that do not show request errors), so while an action runs its messages are held, and the one that
 *   repeats the action's error is dropped.
 * - Informational notices (e.g. "using the bundled demo model") are shown once per install; after
 *   that they go to the output channel only.
 */

/** The message without the "codellama-lsp: " / "codellama: " prefixes the server puts in front. */
export function plainMessage(text: string): string {
  let t = String(text ?? '').trim();
  for (;;) {
    const m = /^(codellama-lsp|codellama|code llama)\s*:\s*/i.exec(t);
    if (!m) return t;
    t = t.slice(m[0].length);
  }
}

/** The text of an error from `sendRequest`, without "Request … failed with message:" wrapping. */
export function errorText(err: unknown): string {
  const raw = String((err as { message?: unknown })?.message ?? err ?? 'unknown error');
  const m = /failed with message:\s*([\s\S]*)$/.exec(raw);
  return plainMessage(m ? m[1] : raw);
}

export interface HeldMessage {
  type: number;
  message: string;
}

/** Holds the server's messages while actions run, so a failure is shown once. */
export class ActionMessages {
  private running = 0;
  private held: HeldMessage[] = [];

  /** True when the message was held (an action is running); false: show it now. */
  offer(m: HeldMessage): boolean {
    if (this.running === 0) return false;
    this.held.push(m);
    return true;
  }

  begin(): void {
    this.running++;
  }

  /** The action ended (with `error` when it failed): the held messages still worth showing. */
  end(error?: string): HeldMessage[] {
    this.running = Math.max(0, this.running - 1);
    if (this.running > 0) return [];
    const out = this.held;
    this.held = [];
    const repeated = error === undefined ? undefined : plainMessage(error);
    return out.filter((m) => repeated === undefined || !plainMessage(m.message).includes(repeated));
  }
}

export interface Store {
  get<T>(key: string): T | undefined;
  update(key: string, value: unknown): Thenable<void> | Promise<void>;
}

/** Informational notices seen before (per install: the extension's global state). */
export class OnceNotices {
  private static readonly KEY = 'codellama.noticesShown';
  constructor(private readonly store: Store) {}

  /** Whether to pop this notice up; remembers it when so. */
  firstTime(message: string): boolean {
    const key = plainMessage(message);
    const seen = this.store.get<string[]>(OnceNotices.KEY) ?? [];
    if (seen.includes(key)) return false;
    void this.store.update(OnceNotices.KEY, [...seen, key].slice(-50));
    return true;
  }
}
