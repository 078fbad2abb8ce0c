/**
 * Reassemble streamed `codellama/chatChunk` notifications ({conversationId, seq, text}) into answers.
 * Chunks may arrive after the final response or (in principle) out of order; the final response text
 * wins when it comes, so a lost chunk never leaves a truncated answer on screen.
 */

export interface ChatChunk {
  conversationId: string;
  seq: number;
  text: string;
}

interface Stream {
  chunks: Map<number, string>;
  final?: string;
}

export class ChatStreams {
  private streams = new Map<string, Stream>();

  private get(id: string): Stream {
    let s = this.streams.get(id);
    if (!s) {
      s = { chunks: new Map() };
      this.streams.set(id, s);
    }
    return s;
  }

  has(id: string): boolean {
    return this.streams.has(id);
  }

  /** Add one chunk; returns the text so far. Duplicates (same seq) are ignored. */
  push(chunk: ChatChunk): string {
    const s = this.get(chunk.conversationId);
    if (!s.chunks.has(chunk.seq)) s.chunks.set(chunk.seq, chunk.text ?? '');
    return this.text(chunk.conversationId);
  }

  /** The server's complete answer: authoritative. */
  finish(id: string, text: string): string {
    this.get(id).final = text;
    return text;
  }

  text(id: string): string {
    const s = this.streams.get(id);
    if (!s) return '';
    if (s.final !== undefined) return s.final;
    return [...s.chunks.entries()].sort((a, b) => a[0] - b[0]).map(([, t]) => t).join('');
  }
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** A conversation's history as sent with each `codellama/chat` request. */
export class Conversation {
  readonly messages: ChatMessage[] = [];
  constructor(readonly id: string) {}

  ask(content: string): ChatMessage[] {
    this.messages.push({ role: 'user', content });
    return [...this.messages];
  }

  answered(content: string): void {
    this.messages.push({ role: 'assistant', content });
  }
}
