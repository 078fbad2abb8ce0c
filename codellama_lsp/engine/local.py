"""The in-process backend: a model resident in memory, with one KV cache kept between requests.

Keystroke after keystroke the prompt changes by a token or two (with the suffix-first FIM layout), so the
one cache and the ids it covers (a model step, :class:`~codellama_lsp.engine.step.ModelStep`) turn a full
prefill into a prefill of the few new tokens. The step is the runtime: transformers
(``step_transformers.py``) or llama.cpp (``step_llamacpp.py``); this class and the decode loop are the same
for both. Not thread-safe by design: only the engine's worker thread calls it (``engine/worker.py``).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

from .backend import CancelToken, GenerationParams, GenerationResult, ModelInfo, OnText, TokenizerText, monotonic
from .decode import Cancelled, DraftModel, generate
from .step import ModelStep


RECENT_RUNS = 4
RECENT_CONTEXT_TOKENS = 24  # prompt tokens kept before each answer, so an n-gram spanning the cursor matches


def new_state(model: Any, kv_cache: str, settings: Any = None) -> ModelStep:
    """The transformers step for ``kv_cache``: "static" is the preallocated in-place cache
    (engine/static_cache.py) where the model has the Llama layout, else the dynamic cache; "quantized" fp8."""
    from .step_transformers import TransformersStep

    if kv_cache == "static":
        from .static_cache import CAPACITY_STEP, StaticStep, supports

        if supports(model):
            context = int(getattr(settings, "context_tokens", 0) or 4096)
            return StaticStep(model, capacity=context + CAPACITY_STEP)
        kv_cache = "dynamic"
    return TransformersStep(model, kv_cache=kv_cache)


class LocalBackend(TokenizerText):
    """Implements :class:`~codellama_lsp.engine.backend.Backend` over a loaded model: a transformers
    ``model`` (its step is made here), or any ready ``step`` (llama.cpp)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        template: Any,
        info: ModelInfo,
        *,
        settings: Any = None,
        draft_model: Any = None,
        notice: str = "",
        step: ModelStep | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.info = info
        self.notice = notice  # e.g. "the default model is not in the cache; using the bundled demo model"
        if step is None:
            kv_cache = getattr(settings, "kv_cache", "dynamic") if settings is not None else "dynamic"
            step = new_state(model, kv_cache, settings)
        self.kv: ModelStep = step
        self.draft = DraftModel(draft_model) if draft_model is not None else None
        self._vocab_texts: list[str] | None = None
        # the cursor context + answer of the last few requests: prompt lookup drafts from them first
        self._recent: deque[list[int]] = deque(maxlen=RECENT_RUNS)

    # -- text ---------------------------------------------------------------------------------------------------

    def vocab_texts(self) -> list[str]:
        """The continuation text of every token id ("" for control tokens and partial bytes), computed once
        on first use (~0.2 s for 32K tokens) for token healing."""
        if self._vocab_texts is None:
            texts = []
            for i in range(self.tokenizer.vocab_size):
                t = self.tokenizer.decode([i])
                texts.append("" if "\ufffd" in t else t)
            self._vocab_texts = texts
        return self._vocab_texts

    def holds(self, settings: Any) -> bool:
        """Whether this model serves ``settings`` as one loaded for them would: a step sized at load (llama.cpp's
        context) says; the transformers caches grow as needed."""
        holds = getattr(self.kv, "holds", None)
        return holds is None or bool(holds(settings))

    # -- generation ---------------------------------------------------------------------------------------------

    def generate(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        cancel: CancelToken | None = None,
        on_text: OnText | None = None,
    ) -> GenerationResult:
        from .tokenizer import StreamDetokenizer

        result = generate(
            self.kv,
            prompt_ids,
            params,
            detokenizer=StreamDetokenizer(self.tokenizer),
            eos_id=self.tokenizer.eos_id,
            cancel=cancel,
            on_text=on_text,
            vocab_texts=self.vocab_texts,
            draft=self.draft,
            history=list(reversed(self._recent)),
            spell=lambda text: self.tokenizer.encode(text, leading_space=False),
        )
        if result.token_ids:
            self._recent.append(list(prompt_ids[-RECENT_CONTEXT_TOKENS:]) + list(result.token_ids))
        return result

    def warm(self, prompt_ids: Sequence[int], cancel: CancelToken | None = None) -> dict[str, Any]:
        """Prefill the cache with ``prompt_ids`` without generating (the user paused: the next request for
        this document then prefills only what changed). Returns {reused_tokens, prefill_tokens, total_s,
        cancelled}."""
        start = monotonic()
        ids = list(prompt_ids)
        # a quantized cache cannot be cropped back by the one token generate() must re-feed: stop short of it
        keep = self.kv.sync(ids, cover_all=self.kv.croppable)
        if not self.kv.croppable:
            ids = ids[:-1]

        def check() -> None:
            if cancel is not None and cancel.cancelled:
                raise Cancelled("cancelled")

        cancelled = False
        try:
            self.kv.prefill(ids[keep:], check)
        except Cancelled:
            cancelled = True
        except BaseException:
            self.kv.reset()
            raise
        return {
            "reused_tokens": keep,
            "prefill_tokens": len(self.kv.ids) - keep,
            "total_s": monotonic() - start,
            "cancelled": cancelled,
        }

    @property
    def cached_ids(self) -> list[int]:
        """The token ids the KV cache currently covers (a copy)."""
        return list(self.kv.ids)

    def reset_cache(self) -> None:
        self.kv.reset_cache()
        self._recent.clear()
        if self.draft is not None:
            self.draft.state.reset_cache()

    def close(self) -> None:
        self._recent.clear()
        self.kv.close()
        self.model = None
        if self.draft is not None:
            self.draft.state.close()
