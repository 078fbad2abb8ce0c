"""Chat without the protocol: Instruct prompts with code context, conversations, and the streamed answer.

``lsp/chat.py`` serves it as the ``codellama/chat`` request (chunks as ``codellama/chatChunk``); the
command line's ``codellama-lsp chat`` uses it directly. Conversations keep history (bounded, in memory)
for follow-up questions; cancelling the awaiting task stops decoding at the next token.

The same :class:`ChatService` runs "Explain this" and the model part of Fix/Document/Write tests, so
every feature that talks to the Instruct model shares one prompt layout (system prompt, code context,
repository snippets within a token budget) and one model: the completion model when it can chat, or the
configured ``chat_model``, loaded once and shared.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..engine.backend import CancelToken, EngineError, GenerationParams, GenerationResult, GenerationStats
from ..errors import INVALID_PARAMS, RequestError

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are an expert software engineer. Answer precisely and briefly in Markdown. "
    "Put code in fenced code blocks tagged with the language."
)

MAX_CONVERSATIONS = 32
MAX_HISTORY_MESSAGES = 40
SNIPPET_BUDGET_TOKENS = 1024

# tree-sitter language name -> markdown fence tag
_FENCE_TAGS = {"tsx": "tsx", "bash": "bash"}

OnChunk = Callable[[int, str], None]  # (sequence number, text), called on the event loop


class ChatError(RequestError):
    """A chat request that cannot be served; the message says why, in one line."""


class ChatParamsError(ChatError):
    """The request itself is malformed (answered with InvalidParams)."""

    code = INVALID_PARAMS


@dataclass
class CodeContext:
    """The code a question is about: a span of one document, plus what else is open in the editor."""

    path: str  # file-system path (or the URI for a document that is not a file)
    text: str  # the whole document
    start: int  # character offsets of the span
    end: int
    language: str | None = None  # tree-sitter language name ("python", "typescript", ...)
    open_documents: dict[str, str] = field(default_factory=dict)
    show_span: bool = True  # False when the question itself quotes the span (Fix, Document)

    @property
    def fence(self) -> str:
        return _FENCE_TAGS.get(self.language or "", self.language or "")

    @property
    def first_line(self) -> int:
        return self.text.count("\n", 0, self.start) + 1

    @property
    def last_line(self) -> int:
        end = self.end - 1 if self.end > self.start and self.text[self.end - 1] == "\n" else self.end
        return self.text.count("\n", 0, end) + 1


@dataclass
class ChatAnswer:
    conversation_id: str
    text: str
    result: GenerationResult | None = None

    @property
    def stop_reason(self) -> str:
        return self.result.stats.stop_reason if self.result is not None else ""

    def to_json(self) -> dict[str, Any]:
        generated = self.result.stats.generated_tokens if self.result is not None else 0
        return {"conversationId": self.conversation_id, "text": self.text, "stopReason": self.stop_reason,
                "generatedTokens": generated}


class Conversations:
    """Recent conversations' messages, least recently used dropped first (memory stays bounded)."""

    def __init__(self, limit: int = MAX_CONVERSATIONS) -> None:
        self.limit = limit
        self._items: OrderedDict[str, list[dict[str, str]]] = OrderedDict()

    def get(self, conversation_id: str) -> list[dict[str, str]]:
        if conversation_id in self._items:
            self._items.move_to_end(conversation_id)
            return list(self._items[conversation_id])
        return []

    def put(self, conversation_id: str, messages: list[dict[str, str]]) -> None:
        self._items[conversation_id] = list(messages[-MAX_HISTORY_MESSAGES:])
        self._items.move_to_end(conversation_id)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def __contains__(self, conversation_id: str) -> bool:
        return conversation_id in self._items

    def __len__(self) -> int:
        return len(self._items)


class ChatEngines:
    """The engine chat runs on: the completion engine, or the configured ``chat_model`` loaded once on
    first use and then shared by chat and every code action."""

    def __init__(self, engine, settings) -> None:
        self.engine = engine
        self.settings = settings
        self._chat_engine = None
        self._chat_model = ""
        self._lock = asyncio.Lock()

    @property
    def separate(self) -> bool:
        return bool(self.settings.chat_model) and self.settings.chat_model != self.settings.model

    async def get(self):
        if not self.separate:
            self.close()  # chat_model was unset: free the separate model
            return self.engine
        async with self._lock:
            if self._chat_engine is not None and self._chat_model != self.settings.chat_model:
                self.close()  # chat_model changed: replace it
            if self._chat_engine is None:
                from ..engine.worker import Engine

                chat_settings = dataclasses.replace(self.settings, model=self.settings.chat_model, model_explicit=True)
                engine = Engine(chat_settings)
                try:
                    await engine.load(None)
                except EngineError as exc:
                    engine.close()
                    raise ChatError(f"the chat model could not be loaded: {exc}") from exc
                self._chat_engine, self._chat_model = engine, self.settings.chat_model
            return self._chat_engine

    def close(self) -> None:
        if self._chat_engine is not None:
            self._chat_engine.close()
            self._chat_engine = None


async def ready_backend(engine, wait=None):
    """The engine's backend once it can serve, or a ChatError saying why it cannot. ``wait`` (the
    server's ``wait_ready``) waits, bounded, while the model loads."""
    if not engine.ready and wait is not None:
        await wait()
    if not engine.ready or engine.backend is None:
        error = engine.error
        raise ChatError(f"the model is not available: {error}" if error else "the model is still loading; try again")
    return engine.backend


def stats_dict(result: GenerationResult | None, stop_reason: str = "") -> dict[str, Any]:
    """The per-request numbers of ``codellama/status`` for one chat generation."""
    s = result.stats if result is not None else GenerationStats()
    counts = s.counts()
    return {**counts, "total_ms": counts["generation_ms"], "stop_reason": s.stop_reason or stop_reason, "source": "chat"}


class ChatService:
    """Builds Instruct prompts with code context, runs them on the chat engine and streams the answer."""

    def __init__(self, engines: ChatEngines, settings, *, retriever=None, report: Callable[[dict], None] | None = None):
        self.engines = engines
        self.settings = settings
        self.retriever = retriever
        self.report = report
        self.wait_ready = None  # the server's: waits (bounded) while the completion model loads
        self.conversations = Conversations()

    # -- prompt ------------------------------------------------------------------------------------

    def context_block(self, ctx: CodeContext, backend, budget_tokens: int) -> str:
        """Markdown for the code a question is about: the span, the function/class around it when that
        adds something and fits, and the best repository snippets within what is left of the budget."""
        count = backend.count_tokens
        parts: list[str] = []
        if ctx.show_span:
            span = _truncate_lines(ctx.text[ctx.start : ctx.end], max(64, budget_tokens // 2), count)
            name = Path(ctx.path).name if ctx.path else "the editor"
            parts.append(f"Code from `{name}` (lines {ctx.first_line}-{ctx.last_line}):\n```{ctx.fence}\n{span.rstrip()}\n```")
        used = count(parts[0]) if parts else 0
        scope = self._enclosing(ctx)
        if scope is not None:
            scope_text = ctx.text[scope.start : scope.end]
            scope_tokens = count(scope_text)
            if used + scope_tokens <= budget_tokens * 3 // 4:
                label = f" `{scope.name}`" if scope.name else ""
                parts.append(f"It is part of{label}:\n```{ctx.fence}\n{scope_text.rstrip()}\n```")
                used += scope_tokens
        snippets = self._snippets(ctx, backend, min(SNIPPET_BUDGET_TOKENS, budget_tokens - used))
        if snippets:
            lines = ["Related code elsewhere in the repository:"]
            for snip in snippets:
                lines.append(f"`{snip.path}` lines {snip.start_line}-{snip.end_line}:\n```{ctx.fence}\n{snip.text.rstrip()}\n```")
            parts.append("\n".join(lines))
        return "\n\n".join(parts)

    @staticmethod
    def _enclosing(ctx: CodeContext):
        if not ctx.language:
            return None
        from .targets import enclosing_scope

        scope = enclosing_scope(ctx.text, ctx.start, ctx.language)
        if scope is None or (scope.start >= ctx.start and scope.end <= ctx.end) or scope.end < ctx.end:
            return None
        return scope

    def _snippets(self, ctx: CodeContext, backend, budget: int) -> list:
        if self.retriever is None or budget <= 32 or not getattr(self.settings, "repo_context", True):
            return []
        try:
            found = self.retriever.snippets(
                ctx.path,
                ctx.text,
                ctx.start,
                open_documents=ctx.open_documents,
                recent_edits=[],
                budget_tokens=budget,
                count_tokens=backend.count_tokens,
            )
        except Exception:  # context is a bonus: a retrieval failure must not fail the question
            log.exception("repository snippets for chat failed")
            return []
        same = str(Path(ctx.path)) if ctx.path else ""
        return [s for s in found if str(Path(s.path)) != same or not (s.start_line <= ctx.last_line and s.end_line >= ctx.first_line)]

    def prompt_budget(self, backend, max_new_tokens: int | None = None) -> int:
        """Prompt tokens allowed: the context budget (and the model's context) minus the answer's room."""
        limit = min(int(self.settings.context_tokens), int(backend.info.context_length or 1 << 30))
        return max(256, limit - int(max_new_tokens or self.settings.chat_max_tokens))

    def build_messages(
        self,
        history: list[dict[str, str]],
        messages: list[dict[str, str]],
        ctx: CodeContext | None,
        backend,
        max_new_tokens: int | None = None,
    ) -> tuple[list[dict[str, str]], list[dict[str, str]], list[int]]:
        """(history kept, new messages with context, prompt ids). Old turns are dropped, oldest first,
        until the prompt fits the budget."""
        template = backend.template
        budget = self.prompt_budget(backend, max_new_tokens)
        new = [dict(m) for m in messages]
        if ctx is not None:
            block = self.context_block(ctx, backend, budget // 2)
            last_user = max(i for i, m in enumerate(new) if m["role"] == "user")
            if block:
                new[last_user]["content"] = f"{block}\n\n{new[last_user]['content']}"
        while True:
            try:
                ids = template.chat_ids([{"role": "system", "content": SYSTEM_PROMPT}, *history, *new])
            except ValueError as exc:  # TemplateError: roles out of order
                raise ChatParamsError(str(exc)) from exc
            if len(ids) <= budget or not history:
                break
            history = history[2:]
        if len(ids) > budget:
            raise ChatError(f"the question is too long: {len(ids)} tokens, the model takes {budget}")
        return history, new, ids

    # -- asking --------------------------------------------------------------------------------------

    async def ask(
        self,
        messages: list[dict[str, str]],
        *,
        conversation_id: str | None = None,
        context: CodeContext | None = None,
        cancel: CancelToken | None = None,
        on_chunk: OnChunk | None = None,
        max_new_tokens: int | None = None,
        remember: bool = True,
    ) -> ChatAnswer:
        """Answer the last user message, with the conversation's history; streams through ``on_chunk``.
        Cancelling the awaiting task stops decoding at the next token."""
        messages = _validate(messages)
        conversation_id = conversation_id or uuid.uuid4().hex
        engine = await self.engines.get()
        backend = await ready_backend(engine, self.wait_ready if engine is self.engines.engine else None)
        history = self.conversations.get(conversation_id)
        history, new, prompt_ids = self.build_messages(history, messages, context, backend, max_new_tokens)
        template = backend.template
        params = GenerationParams(
            max_new_tokens=int(max_new_tokens or self.settings.chat_max_tokens),
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            stop_token_ids=list(template.chat_stop_ids),
            speculation=self.settings.speculation,
        )
        cancel = cancel or CancelToken()
        text, result = await self._stream(engine, prompt_ids, params, cancel, on_chunk)
        if remember:
            self.conversations.put(conversation_id, [*history, *new, {"role": "assistant", "content": text.strip()}])
        return ChatAnswer(conversation_id, text, result)

    async def _stream(self, engine, prompt_ids, params, cancel: CancelToken, on_chunk: OnChunk | None):
        """Run the generation, forwarding decoded text in order; returns (the concatenation of what was
        forwarded, the result). Shielded: a cancelled request sets the token and lets the worker stop at
        its next token, then the outcome (stop_reason "cancelled") is reported."""
        loop = asyncio.get_running_loop()
        sent: list[str] = []
        closed = [False]

        def deliver(piece: str) -> None:  # on the loop, in the order the worker produced the pieces
            if closed[0]:
                return
            if not sent:
                piece = piece.lstrip()  # Instruct answers open with a space after [/INST]
            if piece:
                sent.append(piece)
                if on_chunk is not None:
                    on_chunk(len(sent), piece)

        def on_text(piece: str) -> None:  # worker thread
            if piece:
                loop.call_soon_threadsafe(deliver, piece)

        task = asyncio.ensure_future(engine.generate(prompt_ids, params, cancel, on_text))

        def finished(t: asyncio.Future) -> None:
            if not t.cancelled() and t.exception() is None:
                self._report(stats_dict(t.result(), cancel.reason or "cancelled"))

        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            closed[0] = True
            cancel.cancel("cancelled")
            task.add_done_callback(finished)
            raise
        except EngineError as exc:
            closed[0] = True
            raise ChatError(str(exc)) from exc
        # The worker queued every piece (call_soon_threadsafe) before its result was handed back the
        # same way, so all of them have been delivered by now; anything the stream missed is sent last.
        closed[0] = True
        streamed = "".join(sent)
        final = result.text.lstrip()
        if final.startswith(streamed) and len(final) > len(streamed):
            tail = final[len(streamed):]
            sent.append(tail)
            if on_chunk is not None:
                on_chunk(len(sent), tail)
        self._report(stats_dict(result))
        return "".join(sent), result

    def _report(self, stats: dict) -> None:
        if self.report is not None:
            try:
                self.report(stats)
            except Exception:
                log.exception("status report failed")


def _truncate_lines(text: str, budget: int, count: Callable[[str], int]) -> str:
    """Keep whole lines from the start of ``text`` within ``budget`` tokens (a marker shows the cut)."""
    if count(text) <= budget:
        return text
    kept: list[str] = []
    used = 0
    for line in text.splitlines(keepends=True):
        cost = count(line)
        if used + cost > budget:
            break
        kept.append(line)
        used += cost
    return "".join(kept) + "\n… (truncated)\n"


def _validate(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise ChatParamsError("'messages' must be a non-empty list of {role, content}")
    out = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or not isinstance(m.get("content"), str):
            raise ChatParamsError("each message needs a role ('user' or 'assistant') and a string content")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "user":
        raise ChatParamsError("the last message must be the user's question")
    if any(m["role"] != ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(out)):
        raise ChatParamsError("messages must alternate user, assistant, user, ... and start with the user")
    return out
