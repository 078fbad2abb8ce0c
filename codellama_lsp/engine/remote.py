"""A remote inference server as the backend: a team's llama.cpp server or vLLM (or any OpenAI-compatible server).

Off unless configured (``backend = "openai" | "llamacpp-server" | "vllm"`` plus ``endpoint``), and then the only
part of the program that opens a network connection, to that endpoint only. Prompts are built and counted
locally, token-exact, with the model's own tokenizer (the ``model`` setting names a local directory holding at
least the tokenizer), and sent as token ids; the answer comes back as token ids where the server returns them
and is detokenized here, so the text is the one the local backend would print for the same ids.

What the server speaks is detected once at load (``/props`` is llama.cpp's, ``/v1/models`` names vLLM, ``/info``
and ``/api/version`` are TGI's and Ollama's): :class:`ServerInfo` says whether ids go in and come back, the
context window and whether the server caches prefixes. Text-only servers (Ollama, TGI) get the prompt as text
and are labelled degraded: their own tokenizer re-tokenizes it, so control tokens may not survive.

Cancellation: a superseded or timed-out request shuts its socket down from a watcher thread, so the worker is
free at once even while the server is still prefilling. llama.cpp notices a closed stream only between batches
(measured: a 2,000-token prompt in one 2,048 batch ran to its end, ~18 s on one core, and the next request
queued behind it; with 256-token batches the slot stopped at 256) and keeps what it prefilled, so a superseded
keystroke's prefill is mostly reused by the next one; with several slots the next request asks for the slot the
previous one used (``id_slot``), which it otherwise misses while that slot is still winding down.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import ssl
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from .backend import (CancelToken, EngineError, GenerationParams, GenerationResult, GenerationStats, ModelInfo,
                      ModelLoadError, OnText, TokenizerText, monotonic)

log = logging.getLogger(__name__)

DIALECTS = ("llamacpp-server", "vllm", "openai", "text-only")
API_KEY_ENV = "CODELLAMA_LSP_API_KEY"
WATCH_INTERVAL_S = 0.02


@dataclass(frozen=True)
class ServerInfo:
    """What the configured server can do, detected at load."""

    dialect: str  # "llamacpp-server" | "vllm" | "openai" (ids in, text out) | "text-only" (Ollama, TGI)
    model: str  # the name sent as "model" ("" when the server serves one model and ignores it)
    context_window: int = 0  # tokens per request (llama.cpp: per slot); 0 = unknown
    accepts_ids: bool = True
    returns_ids: bool = False
    prefix_cache: bool = False
    slots: int = 0  # llama.cpp's parallel slots (0 = unknown)
    degraded: str = ""  # why answers may differ from the local backend's, shown in doctor and the status
    vocab_size: int = 0  # the served model's vocabulary (llama.cpp reports it; 0 = unknown)

    def describe(self) -> dict[str, Any]:
        return asdict(self)


class RemoteError(EngineError):
    """One line for the editor: what failed at the server and what to change."""


# ---------------------------------------------------------------------------------------------------------------
# connection settings


def read_api_key(settings: Any) -> str:
    """The bearer token: from the file named by ``api_key_file``, else the environment variable named by
    ``api_key_env``. Never from editor settings, never logged."""
    path = getattr(settings, "api_key_file", "") or ""
    if path:
        try:
            key = Path(os.path.expanduser(path)).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"cannot read the API key file {path} ({exc.__class__.__name__}); check `api_key_file`") from None
        if not key:
            raise ModelLoadError(f"the API key file {path} is empty; check `api_key_file`")
        return key
    return os.environ.get(getattr(settings, "api_key_env", "") or API_KEY_ENV, "").strip()


def cache_salt(settings: Any, api_key: str) -> str:
    """vLLM's per-request ``cache_salt``: cached prefixes are shared only between requests with the same salt,
    so another user cannot probe (by timing) what this user's prompts contained. The ``cache_salt`` setting
    wins; otherwise a hash of the API key (per-user keys give per-user caches), else of user and host."""
    explicit = getattr(settings, "cache_salt", "") or ""
    if explicit:
        return explicit
    import getpass

    seed = api_key or f"{getpass.getuser()}@{socket.gethostname()}"
    return hashlib.sha256(("codellama-lsp cache salt\0" + seed).encode()).hexdigest()[:32]


def make_client(settings: Any, api_key: str):
    """An httpx client for the endpoint: system CA store (plus ``ca_bundle``), connect/read timeouts, bearer key."""
    import httpx2 as httpx

    verify: Any = True
    bundle = getattr(settings, "ca_bundle", "") or ""
    if bundle:
        try:
            verify = ssl.create_default_context(cafile=os.path.expanduser(bundle))
        except (OSError, ssl.SSLError) as exc:
            raise ModelLoadError(f"cannot use the CA bundle {bundle} ({exc}); check `ca_bundle`") from None
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    timeout = httpx.Timeout(float(getattr(settings, "read_timeout_s", 30.0) or 30.0),
                            connect=float(getattr(settings, "connect_timeout_s", 5.0) or 5.0))
    return httpx.Client(base_url=settings.endpoint.rstrip("/"), headers=headers, timeout=timeout, verify=verify,
                        trust_env=False, follow_redirects=False)


# ---------------------------------------------------------------------------------------------------------------
# errors


def _error_text(response: Any) -> str:
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - any non-JSON body
        return (response.text or "")[:200].strip()
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:300]
        return str(err)[:300]
    return str(body)[:300]


def http_error(status: int, text: str, endpoint: str, *, model: str = "", prompt_tokens: int = 0) -> RemoteError:
    """A one-line message for an HTTP error answer."""
    low = text.lower()
    if status in (401, 403):
        return RemoteError(f"the inference server at {endpoint} refused the API key (HTTP {status}); set the key in "
                           f"the {API_KEY_ENV} environment variable or the file named by `api_key_file`")
    if "context" in low and any(w in low for w in ("exceed", "maximum", "too long", "longer than", "overflow")):
        return RemoteError(f"the prompt ({prompt_tokens} tokens) does not fit the server's context window at "
                           f"{endpoint} ({text}); lower the `context_tokens` setting")
    if status == 404 or ("model" in low and ("does not exist" in low or "not found" in low)):
        return RemoteError(f"the inference server at {endpoint} does not serve model '{model}' (HTTP {status}: {text}); "
                           "check the `remote_model` setting")
    return RemoteError(f"the inference server at {endpoint} answered HTTP {status}: {text or 'no detail'}")


def transport_error(exc: BaseException, endpoint: str, read_timeout_s: float) -> RemoteError:
    import httpx2 as httpx

    if isinstance(exc, httpx.ConnectTimeout):
        return RemoteError(f"cannot reach the inference server at {endpoint} (connect timed out); check `endpoint` "
                           "and the network")
    if isinstance(exc, httpx.ConnectError):
        reason = "certificate not trusted; set `ca_bundle`" if "CERTIFICATE" in str(exc) else "connection refused"
        return RemoteError(f"cannot reach the inference server at {endpoint} ({reason}); is it running? "
                           "check the `endpoint` setting")
    if isinstance(exc, httpx.ReadTimeout):
        return RemoteError(f"the inference server at {endpoint} sent nothing for {read_timeout_s:g} s "
                           "(`read_timeout_s`); it may be overloaded")
    return RemoteError(f"the connection to the inference server at {endpoint} broke ({type(exc).__name__}: "
                       f"{str(exc)[:200]}); the server may have stopped")


# ---------------------------------------------------------------------------------------------------------------
# detection


def _get_json(client: Any, path: str) -> tuple[int, Any]:
    """(status, parsed JSON or None); transport errors propagate (the caller maps them)."""
    response = client.get(path)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


def detect_server(client: Any, endpoint: str, *, dialect: str = "openai", model: str = "",
                  read_timeout_s: float = 30.0) -> ServerInfo:
    """Ask the server what it is. ``dialect`` other than "openai" forces that dialect (detection fills the rest)."""
    try:
        status, props = _get_json(client, "/props")
        if status in (401, 403):
            raise http_error(status, "", endpoint)
        llamacpp = status == 200 and isinstance(props, dict) and "default_generation_settings" in props
        status, models = _get_json(client, "/v1/models")
        if status in (401, 403):
            raise http_error(status, "", endpoint)
        entries = models.get("data") if isinstance(models, dict) else None
        entries = [e for e in entries or [] if isinstance(e, dict)]
        ids = [str(e.get("id")) for e in entries if e.get("id")]
        owner = str(entries[0].get("owned_by", "")) if entries else ""
        text_only = ""
        if not llamacpp and owner != "vllm" and dialect == "openai":
            if _get_json(client, "/api/version")[0] == 200:
                text_only = "Ollama"
            elif _get_json(client, "/info")[0] == 200:
                text_only = "TGI"
    except RemoteError:
        raise
    except Exception as exc:  # noqa: BLE001 - transport
        raise transport_error(exc, endpoint, read_timeout_s) from None
    if model and ids and model not in ids:
        raise RemoteError(f"the inference server at {endpoint} does not serve model '{model}' (it serves "
                          f"{', '.join(ids[:5])}); check the `remote_model` setting")
    chosen = model or (ids[0] if ids else "")
    if dialect == "openai":
        dialect = "llamacpp-server" if llamacpp else "vllm" if owner == "vllm" else "text-only" if text_only else "openai"
    if dialect == "llamacpp-server":
        settings = (props or {}).get("default_generation_settings") or {}
        window = int(settings.get("n_ctx") or 0)
        entry = next((e for e in entries if e.get("id") == chosen), entries[0] if entries else {})
        vocab = int((entry.get("meta") or {}).get("n_vocab") or 0)
        return ServerInfo("llamacpp-server", chosen, window, accepts_ids=True, returns_ids=True, prefix_cache=True,
                          slots=int((props or {}).get("total_slots") or 0), vocab_size=vocab)
    if dialect == "vllm":
        entry = next((e for e in entries if e.get("id") == chosen), {})
        return ServerInfo("vllm", chosen, int(entry.get("max_model_len") or 0), accepts_ids=True, returns_ids=True,
                          prefix_cache=True)
    if dialect == "text-only":
        return ServerInfo("text-only", chosen, accepts_ids=False, returns_ids=False,
                          degraded=f"{text_only or 'this server'} takes text prompts only: the prompt is re-tokenized "
                                   "by the server, so control tokens and the answer may differ from the local model's")
    return ServerInfo("openai", chosen, accepts_ids=True, returns_ids=False,
                      degraded="the server returns text, not token ids: the answer is not detokenized locally")


# ---------------------------------------------------------------------------------------------------------------
# the backend


class _Watch:
    """Shuts a streaming response's socket down when the request is cancelled or its time budget runs out, so the
    worker stops waiting at once even while the server is silent (prefilling). ``reason`` says which happened."""

    def __init__(self, cancel: CancelToken | None, deadline: float | None) -> None:
        self.cancel, self.deadline = cancel, deadline
        self.reason = ""
        self._done = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def arm(self, response: Any) -> None:
        if self.cancel is None and self.deadline is None:
            return
        stream = response.extensions.get("network_stream")
        self._sock = stream.get_extra_info("socket") if stream is not None else None
        self._thread = threading.Thread(target=self._run, name="remote-cancel", daemon=True)
        self._thread.start()

    def check(self) -> str:
        if self.reason:
            return self.reason
        if self.cancel is not None and self.cancel.cancelled:
            self.reason = "cancelled"
        elif self.deadline is not None and monotonic() >= self.deadline:
            self.reason = "time_budget"
        return self.reason

    def _run(self) -> None:
        while not self._done.wait(WATCH_INTERVAL_S):
            if self.check():
                try:
                    if self._sock is not None:
                        self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(1.0)


class RemoteBackend(TokenizerText):
    """Implements :class:`~codellama_lsp.engine.backend.Backend` against an inference server over HTTP."""

    def __init__(self, client: Any, server: ServerInfo, tokenizer: Any, template: Any, info: ModelInfo, *,
                 endpoint: str, salt: str = "", read_timeout_s: float = 30.0) -> None:
        self.client = client
        self.server = server
        self.endpoint = endpoint.rstrip("/")
        self.tokenizer = tokenizer
        self.template = template
        self.info = info
        self.salt = salt
        self.read_timeout_s = read_timeout_s
        self.notice = f"remote backend degraded: {server.degraded}" if server.degraded else ""
        self.slot = -1  # llama.cpp slot of the last request: the next asks for it (its cache lives there)

    # -- requests -----------------------------------------------------------------------------------------------

    def request(self, prompt_ids: Sequence[int], params: GenerationParams) -> tuple[str, dict[str, Any]]:
        """(path, JSON body) of the streaming request for this server's dialect."""
        ids = [int(i) for i in prompt_ids]
        dialect = self.server.dialect
        sampling: dict[str, Any] = {"temperature": params.temperature}
        if params.temperature > 0:
            sampling["top_p"] = params.top_p
        if params.seed is not None:
            sampling["seed"] = params.seed
        if dialect == "llamacpp-server":
            body = {"prompt": ids, "n_predict": params.max_new_tokens, "stream": True, "return_tokens": True,
                    "return_progress": True, "timings_per_token": True,  # reuse counts even when we stop reading early
                    "cache_prompt": bool(params.reuse_cache), "id_slot": self.slot,
                    **sampling}
            if params.heal_prefix:
                body["grammar"] = heal_grammar(params.heal_prefix)
            return "/completion", body
        body = {"prompt": ids, "max_tokens": params.max_new_tokens, "stream": True,
                "stream_options": {"include_usage": True}, **sampling}
        if self.server.model:
            body["model"] = self.server.model
        if params.stop_strings:  # checked here too; the server stopping itself saves its work
            body["stop"] = [s for s in params.stop_strings if s][:4]  # the OpenAI API takes at most four
        if dialect == "vllm":
            body.update(return_token_ids=True, skip_special_tokens=False, cache_salt=self.salt)
            body["stream_options"]["continuous_usage_stats"] = True  # reuse counts even when we stop reading early
            if params.stop_token_ids:
                body["stop_token_ids"] = [int(i) for i in params.stop_token_ids]
            if not params.reuse_cache:  # the naive baseline: a fresh salt per request misses every cached block
                body["cache_salt"] = hashlib.sha256(f"{self.salt}{monotonic()}".encode()).hexdigest()[:32]
        elif dialect == "text-only":
            body["prompt"] = self.prompt_text(ids)
        return "/v1/completions", body

    def prompt_text(self, ids: Sequence[int]) -> str:
        """The prompt for a text-only server: control tokens as their piece strings."""
        return "".join(self.tokenizer.piece(i) or "" for i in ids).replace("▁", " ")

    def _events(self, response: Any) -> Iterator[dict[str, Any]]:
        import json

        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event

    def generate(self, prompt_ids: Sequence[int], params: GenerationParams, cancel: CancelToken | None = None,
                 on_text: OnText | None = None) -> GenerationResult:
        from .decode import TextTracker
        from .tokenizer import StreamDetokenizer

        start = monotonic()
        stats = GenerationStats(prompt_tokens=len(prompt_ids), prefill_tokens=len(prompt_ids))
        if cancel is not None and cancel.cancelled:
            stats.stop_reason = "cancelled"
            return GenerationResult(text="", stats=stats)
        window = self.server.context_window
        if window and len(prompt_ids) + 1 > window:
            raise RemoteError(f"the prompt ({len(prompt_ids)} tokens) does not fit the server's context window at "
                              f"{self.endpoint} ({window} tokens); lower the `context_tokens` setting")
        deadline = start + params.time_budget_s if params.time_budget_s is not None else None
        path, body = self.request(prompt_ids, params)
        text = TextTracker(StreamDetokenizer(self.tokenizer), params.stop_strings, params.heal_prefix, on_text)
        stop_ids = set(int(i) for i in params.stop_token_ids)
        eos_id = getattr(self.tokenizer, "eos_id", None)
        if eos_id is not None:
            stop_ids.add(eos_id)
        generated: list[int] = []
        reason = ""
        watch = _Watch(cancel, deadline)
        import httpx2 as httpx

        try:
            with self.client.stream("POST", path, json=body, headers={"Accept": "text/event-stream"}) as response:
                if response.status_code != 200:
                    response.read()
                    raise http_error(response.status_code, _error_text(response), self.endpoint,
                                     model=self.server.model, prompt_tokens=len(prompt_ids))
                watch.arm(response)
                for event in self._events(response):
                    reason = self._consume(event, stats, text, generated, stop_ids, eos_id, start, params)
                    if reason or watch.check():
                        break
        except RemoteError:
            raise
        except httpx.HTTPError as exc:
            if not watch.reason:
                raise transport_error(exc, self.endpoint, self.read_timeout_s) from None
        finally:
            watch.close()
        reason = watch.reason or reason or "eot"
        completion = text.finish()
        if params.heal_prefix and reason != "cancelled" and not text.raw.startswith(params.heal_prefix):
            reason, completion = "heal_failed", ""  # the answer does not continue the partial word at the cursor
        stats.stop_reason = reason
        stats.generated_tokens = max(stats.generated_tokens, len(generated))
        stats.forward_passes = stats.generated_tokens
        stats.total_s = monotonic() - start
        return GenerationResult(text=completion, token_ids=generated, stats=stats)

    def warm(self, prompt_ids: Sequence[int], cancel: CancelToken | None = None) -> dict[str, Any]:
        """Nothing to prefill here: the server keeps its own cache (``cache_prompt``), filled by requests."""
        return {}

    def _consume(self, event: dict[str, Any], stats: GenerationStats, text: Any, generated: list[int],
                 stop_ids: set[int], eos_id: int | None, start: float, params: GenerationParams) -> str:
        """Fold one streamed event into the result; returns a stop reason ('' to go on)."""
        if self.server.dialect == "llamacpp-server":
            # prefill progress chunks (return_progress) carry a placeholder token 0 and no generated token
            progress = "prompt_progress" in event or (not event.get("stop") and event.get("tokens_predicted") == 0)
            ids = [] if progress else event.get("tokens") or []
            pieces: list[Any] = list(ids)
            if event.get("id_slot", -1) >= 0:
                self.slot = int(event["id_slot"])
            timings = event.get("timings") or {}
            if "cache_n" in timings:
                stats.reused_tokens = int(timings.get("cache_n") or 0)
                stats.prefill_tokens = int(timings.get("prompt_n") or 0)
            finish = "max_tokens" if event.get("stop_type") == "limit" else "eot" if event.get("stop") else ""
        else:
            choice = (event.get("choices") or [{}])[0] or {}
            ids = choice.get("token_ids") if self.server.returns_ids else None
            pieces = list(ids) if ids else ([choice["text"]] if choice.get("text") else [])
            usage = event.get("usage") or {}
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
            if cached is not None:
                stats.reused_tokens = int(cached)
                stats.prefill_tokens = max(0, stats.prompt_tokens - int(cached))
            if usage.get("completion_tokens"):
                stats.generated_tokens = int(usage["completion_tokens"])
            finish = {"length": "max_tokens", "stop": "eot"}.get(choice.get("finish_reason") or "", "")
        for piece in pieces:
            if not generated and not stats.time_to_first_token_s:
                stats.time_to_first_token_s = monotonic() - start
            if isinstance(piece, str):  # a server that returns text only
                generated.append(-1)
                text.raw += piece
                if text._update(final=False):
                    return "stop_string"
                continue
            generated.append(int(piece))
            if piece in stop_ids:
                return "eos" if piece == eos_id else "eot"
            if text.push(int(piece)):
                return "stop_string"
            if len(generated) >= params.max_new_tokens:
                return "max_tokens"
        return finish

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing must not fail
            pass


def heal_grammar(prefix: str) -> str:
    """A llama.cpp GBNF grammar whose text must start with ``prefix`` (token healing) and is free after it."""
    escaped = "".join(c if c.isalnum() or c in " _-.,:;()[]{}=+*/<>!?&|^%$#@~`'" else f"\\x{ord(c):02x}"
                      if ord(c) < 0x100 else f"\\u{ord(c):04x}" for c in prefix)
    return f'root ::= "{escaped}" [^\\x00]*'


# ---------------------------------------------------------------------------------------------------------------
# loading


def _local_tokenizer(settings: Any) -> tuple[Any, dict[str, Any], Any]:
    """(resolved model, config, tokenizer) from the ``model`` setting: a model directory or cached id, or the same
    GGUF file the server runs (its tokenizer and config are read from the file; no weights are loaded)."""
    from .gguf_file import config_from_metadata, is_gguf, load_gguf_tokenizer, read_metadata
    from .resolve import ResolvedModel, load_tokenizer_for, read_config, resolve_model

    path = Path(os.path.expanduser(settings.model or ""))
    if path.is_file() and is_gguf(path):
        meta = read_metadata(path)
        resolved = ResolvedModel(path=path, name=settings.model)
        return resolved, config_from_metadata(meta), load_gguf_tokenizer(path, meta)
    resolved = resolve_model(settings.model, explicit=settings.model_explicit)
    # the weights live on the server: a directory with only the tokenizer is enough here
    config = read_config(resolved.path, resolved.name) if (resolved.path / "config.json").is_file() else {}
    return resolved, config, load_tokenizer_for(resolved)


def load_remote_backend(settings: Any, progress: Any = None) -> RemoteBackend:
    """Tokenizer and template from the local ``model`` directory; generation at ``settings.endpoint``."""
    from .resolve import context_window
    from .templates import template_for

    report = progress or (lambda _pct, _msg: None)
    if not settings.endpoint:
        raise ModelLoadError(f'backend = "{settings.backend}" needs the `endpoint` setting (e.g. http://localhost:8080)')
    if not settings.endpoint.startswith(("http://", "https://")):
        raise ModelLoadError(f"endpoint '{settings.endpoint}' must start with http:// or https://")
    report(10, f"loading tokenizer for the remote model at {settings.endpoint}")
    resolved, config, tokenizer = _local_tokenizer(settings)
    template = template_for(tokenizer, model_name=resolved.name, config=config, override=settings.template, fim=settings.fim)
    api_key = read_api_key(settings)
    client = make_client(settings, api_key)
    read_timeout = float(getattr(settings, "read_timeout_s", 30.0) or 30.0)
    report(50, f"asking {settings.endpoint} what it serves")
    try:
        server = detect_server(client, settings.endpoint, dialect=settings.backend,
                               model=getattr(settings, "remote_model", "") or "", read_timeout_s=read_timeout)
    except RemoteError as exc:
        client.close()
        raise ModelLoadError(str(exc)) from None
    if server.vocab_size and server.vocab_size != tokenizer.vocab_size:  # ids would mean other tokens there
        client.close()
        raise ModelLoadError(f"the server at {settings.endpoint} runs a model with a {server.vocab_size}-token "
                             f"vocabulary but the local tokenizer ('{settings.model}') has {tokenizer.vocab_size}; set "
                             "`model` to the served model's tokenizer (or its GGUF file)")
    window = context_window(config)
    if server.context_window:
        window = min(window, server.context_window)
    info = ModelInfo(
        name=resolved.name, path=str(resolved.path), family=template.family, fim=template.fim,
        device=settings.endpoint, dtype=server.dialect, quantization="remote" + (" (degraded)" if server.degraded else ""),
        context_length=window, is_demo=resolved.is_demo,
    )
    salt = cache_salt(settings, api_key) if server.dialect == "vllm" else ""
    report(100, f"remote backend ready ({server.dialect} at {settings.endpoint})")
    return RemoteBackend(client, server, tokenizer, template, info, endpoint=settings.endpoint, salt=salt,
                         read_timeout_s=read_timeout)
