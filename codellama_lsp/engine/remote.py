"""An OpenAI-compatible remote backend (vLLM, TGI, llama.cpp server, Ollama): off unless configured.

The only part of the program that opens a network connection, and only to the ``endpoint`` the user set
with ``backend = "openai"``. Prompts are still built and counted locally, token-exact, with the model's own
tokenizer (the ``model`` setting must name a local directory or cached id holding at least the tokenizer),
and sent as token ids to ``/v1/completions`` (vLLM and llama.cpp's server accept ids there; a server that
wants text gets ``prompt_as_text=True``). What this backend cannot do, by the nature of HTTP: reuse our KV
cache (the server has its own prefix cache), speculate in our loop, or stop within one token; cancellation
closes the stream at the next chunk.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Sequence

from .backend import (CancelToken, EngineError, GenerationParams, GenerationResult, GenerationStats, ModelInfo, OnText,
                      TokenizerText, monotonic)


class RemoteBackend(TokenizerText):
    """Implements :class:`~codellama_lsp.engine.backend.Backend` over HTTP (server-sent events)."""

    def __init__(
        self,
        endpoint: str,
        tokenizer: Any,
        template: Any,
        info: ModelInfo,
        *,
        remote_model: str = "",
        timeout_s: float = 30.0,
        prompt_as_text: bool = False,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.tokenizer = tokenizer
        self.template = template
        self.info = info
        self.remote_model = remote_model or info.name
        self.timeout_s = timeout_s
        self.prompt_as_text = prompt_as_text
        self.notice = ""

    def _payload(self, prompt_ids: Sequence[int], params: GenerationParams) -> dict[str, Any]:
        ids = list(prompt_ids)
        prompt: Any = ids
        if self.prompt_as_text:  # control tokens travel as their piece strings
            prompt = "".join(self.tokenizer.piece(i) or "" for i in ids).replace("▁", " ")
        body: dict[str, Any] = {
            "model": self.remote_model,
            "prompt": prompt,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
        }
        if params.stop_strings:
            body["stop"] = list(params.stop_strings)[:4]  # the OpenAI API takes at most four
        if params.stop_token_ids:
            body["stop_token_ids"] = list(params.stop_token_ids)  # vLLM extension; ignored elsewhere
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    def generate(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        cancel: CancelToken | None = None,
        on_text: OnText | None = None,
    ) -> GenerationResult:
        start = monotonic()
        stats = GenerationStats(prompt_tokens=len(prompt_ids), prefill_tokens=len(prompt_ids))
        deadline = start + params.time_budget_s if params.time_budget_s is not None else None
        request = urllib.request.Request(
            f"{self.endpoint}/v1/completions",
            data=json.dumps(self._payload(prompt_ids, params)).encode(),
            headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
        )
        text = ""
        reason = ""
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                for raw in response:
                    if cancel is not None and cancel.cancelled:
                        reason = "cancelled"
                        break
                    if deadline is not None and monotonic() >= deadline:
                        reason = "time_budget"
                        break
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    choice = (chunk.get("choices") or [{}])[0]
                    piece = choice.get("text") or ""
                    if piece:
                        if not text:
                            stats.time_to_first_token_s = monotonic() - start
                        text += piece
                        stats.generated_tokens += 1
                        if on_text is not None:
                            on_text(piece)
                    finish = choice.get("finish_reason")
                    if finish:
                        reason = {"length": "max_tokens", "stop": "eot"}.get(finish, finish)
                    usage = chunk.get("usage") or {}
                    if usage.get("completion_tokens"):
                        stats.generated_tokens = int(usage["completion_tokens"])
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise EngineError(f"remote backend {self.endpoint} failed: {exc}; check the `endpoint` setting") from None
        stats.stop_reason = reason or "eot"
        stats.total_s = monotonic() - start
        return GenerationResult(text=text, token_ids=[], stats=stats)

    def close(self) -> None:
        pass


def load_remote_backend(settings: Any, progress: Any = None) -> RemoteBackend:
    """Tokenizer and template from the local ``model`` directory; generation at ``settings.endpoint``."""
    from .backend import ModelLoadError
    from .loading import context_window, load_tokenizer_for, read_config, resolve_model
    from .templates import template_for

    report = progress or (lambda _pct, _msg: None)
    if not settings.endpoint:
        raise ModelLoadError("backend = \"openai\" needs the `endpoint` setting (e.g. http://localhost:8000)")
    report(10, f"loading tokenizer for the remote model at {settings.endpoint}")
    resolved = resolve_model(settings.model, explicit=settings.model_explicit)
    config = read_config(resolved.path, resolved.name)
    tokenizer = load_tokenizer_for(resolved)
    template = template_for(tokenizer, model_name=resolved.name, config=config, override=settings.template, fim=settings.fim)
    info = ModelInfo(
        name=resolved.name, path=str(resolved.path), family=template.family, fim=template.fim,
        device=settings.endpoint, dtype="remote", quantization="remote",
        context_length=context_window(config), is_demo=resolved.is_demo,
    )
    report(100, "remote backend ready")
    return RemoteBackend(settings.endpoint, tokenizer, template, info)
