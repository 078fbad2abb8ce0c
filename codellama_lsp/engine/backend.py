"""The contract between the features (completion, actions, chat) and whatever runs the model.

Everything above the engine talks to a :class:`Backend`; the in-process transformers model
(``engine/local.py``) is one implementation, and a remote OpenAI-compatible server (vLLM, TGI,
llama.cpp, Ollama) can be another. Keeping the interface this small is what makes that swap cheap.

Threading rule of the house: ``Backend.generate`` is *blocking* and is only ever called on the
engine's single worker thread (``engine/worker.py``); the asyncio loop never calls it directly.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable


class EngineError(Exception):
    """A failure the user can act on; ``str(err)`` is one line saying what to run or change."""


class ModelLoadError(EngineError):
    """The model could not be loaded (missing weights, bad path, corrupt checkpoint, OOM, ...)."""


@dataclass(frozen=True)
class ModelInfo:
    """What the status bar, ``doctor`` and ``codellama/status`` show about the resident model."""

    name: str  # what the user asked for ("codellama/CodeLlama-7b-Instruct-hf", "demo", a path)
    path: str  # the resolved local directory
    family: str  # template family: "codellama", "starcoder2", "deepseek", "qwen", "codestral"
    fim: bool  # trained to infill (False: complete left to right from the prefix)
    device: str  # "cpu", "cuda:0", ...
    dtype: str  # "float32", "bfloat16", ...
    quantization: str  # "none", "4bit", "8bit"
    context_length: int  # tokens the model handles well (max_position_embeddings)
    is_demo: bool = False
    runtime: str = "transformers"  # what runs the model: "transformers", "llamacpp" (GGUF), "remote"


class CancelToken:
    """Set from the asyncio side, checked by the decode loop before every forward pass."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str = ""

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class GenerationParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: Sequence[int] = ()  # e.g. ▁<EOT>, EOS
    stop_strings: Sequence[str] = ()  # checked on the decoded text; the match is not returned
    time_budget_s: float | None = None  # wall-clock budget for the whole call
    speculation: str = "prompt_lookup"  # "none" | "prompt_lookup" | "draft"
    reuse_cache: bool = True  # reuse the KV cache from the previous call's common token prefix
    # token healing: text cut from the end of the prompt (a partial word at the cursor); the generated
    # text is constrained to start with it, and it is removed again from ``GenerationResult.text``.
    heal_prefix: str = ""


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens served from the KV cache (not prefilled)
    prefill_tokens: int = 0  # prompt tokens actually run through the model
    generated_tokens: int = 0
    # forward passes of the model that produced generated tokens: the prefill's last one counts once,
    # then one per decode or verify step; plain decoding gives generated == forward_passes, speculation fewer
    forward_passes: int = 0
    time_to_first_token_s: float = 0.0
    total_s: float = 0.0
    stop_reason: str = ""  # "eot" | "eos" | "stop_string" | "max_tokens" | "time_budget" | "cancelled"
    # (also "heal_failed": no token is consistent with GenerationParams.heal_prefix; the text is empty)
    draft_tokens: int = 0  # speculative tokens proposed (prompt lookup or draft model)
    accepted_draft_tokens: int = 0  # of those, accepted by the verify pass

    @property
    def tokens_per_forward(self) -> float:
        return self.generated_tokens / self.forward_passes if self.forward_passes else 0.0

    def counts(self) -> dict[str, Any]:
        """The per-request numbers that ``codellama/status`` and ``complete --json`` report."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "reused_tokens": self.reused_tokens,
            "prefill_tokens": self.prefill_tokens,
            "generated_tokens": self.generated_tokens,
            "forward_passes": self.forward_passes,
            "time_to_first_token_ms": round(self.time_to_first_token_s * 1000, 1),
            "generation_ms": round(self.total_s * 1000, 1),
        }


@dataclass
class GenerationResult:
    text: str  # the decoded continuation, exact (leading space and indentation kept)
    token_ids: list[int] = field(default_factory=list)
    stats: GenerationStats = field(default_factory=GenerationStats)

    @property
    def cancelled(self) -> bool:
        return self.stats.stop_reason == "cancelled"


OnText = Callable[[str], None]  # receives each newly decoded piece while generating


@runtime_checkable
class Backend(Protocol):
    info: ModelInfo
    tokenizer: Any  # engine.tokenizer.Tokenizer: prompts are built and counted with the model's own tokenizer
    template: Any  # engine.templates.Template: the model's prompt format (FIM, chat, stop tokens)
    notice: str  # one line for the user about how the model was loaded ("" when there is nothing to say)

    def encode(self, text: str, *, leading_space: bool = True) -> list[int]:
        """Token ids for ``text`` with no BOS. ``leading_space=False`` suppresses SentencePiece's
        implicit leading '▁' (Meta's ``encode_infilling``)."""

    def decode(self, ids: Sequence[int]) -> str:
        """Exact text of ``ids`` as a continuation (a leading space is kept)."""

    def count_tokens(self, text: str) -> int: ...

    def generate(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        cancel: CancelToken | None = None,
        on_text: OnText | None = None,
    ) -> GenerationResult:
        """Blocking; call only on the engine worker thread. Never raises on cancel: returns what
        was generated so far with ``stop_reason == "cancelled"``."""

    def warm(self, prompt_ids: Sequence[int], cancel: CancelToken | None = None) -> dict[str, Any]:
        """Blocking, on the worker thread: prefill the KV cache with ``prompt_ids`` without generating, so the
        next request for the same document prefills only what changed; {} where there is no cache here."""

    def close(self) -> None: ...


class TokenizerText:
    """``encode`` / ``decode`` / ``count_tokens`` through ``self.tokenizer``: the local and the remote backend
    both count and build prompts with the model's own tokenizer."""

    tokenizer: Any

    def encode(self, text: str, *, leading_space: bool = True) -> list[int]:
        return self.tokenizer.encode(text, leading_space=leading_space)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def count_tokens(self, text: str) -> int:
        return self.tokenizer.count(text)


def monotonic() -> float:
    return time.perf_counter()
