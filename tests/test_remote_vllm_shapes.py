"""vLLM compatibility of the remote backend's requests and of its reading of vLLM's answers.

vLLM cannot run here (it needs a GPU or a CPU build from source), so this test holds the backend to vLLM's
documented OpenAI-compatible protocol instead (``vllm/entrypoints/openai/completion/protocol.py``:
``CompletionRequest``, ``CompletionStreamResponse``, ``UsageInfo``; ``/v1/models`` cards with ``owned_by: "vllm"``
and ``max_model_len``): a stdlib HTTP server checks every field we send against the request model's field names
and types, and answers with the documented stream shape (``token_ids`` per chunk with ``return_token_ids``, the
usage with ``prompt_tokens_details.cached_tokens`` last) and vLLM's error bodies.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared_data import needs_shared, TOKENIZER_DIR  # noqa: F401

# CompletionRequest's fields (OpenAI's plus vLLM's sampling and extra params) that this client may send
VLLM_REQUEST_FIELDS = {
    "model", "prompt", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n", "presence_penalty",
    "seed", "stop", "stream", "stream_options", "suffix", "temperature", "top_p", "user", "top_k", "min_p",
    "repetition_penalty", "stop_token_ids", "include_stop_str_in_output", "ignore_eos", "min_tokens",
    "skip_special_tokens", "spaces_between_special_tokens", "truncate_prompt_tokens", "allowed_token_ids",
    "add_special_tokens", "structured_outputs", "priority", "request_id", "return_tokens_as_token_ids",
    "return_token_ids", "cache_salt",
}
STREAM_OPTIONS = {"include_usage", "continuous_usage_stats"}


class VLLMShapes(BaseHTTPRequestHandler):
    """Answers like ``vllm serve codellama/CodeLlama-7b-hf --enable-prompt-tokens-details``."""

    served = "codellama/CodeLlama-7b-hf"
    max_model_len = 16384
    answer_ids: list[int] = []
    cached = 0
    required_key = ""
    received: list[dict] = []
    problems: list[str] = []

    def log_message(self, *args):
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str) -> None:  # vLLM's ErrorResponse
        self._json(status, {"error": {"message": message, "type": kind, "param": None, "code": status}})

    def _authorised(self) -> bool:
        if self.required_key and self.headers.get("Authorization") != f"Bearer {self.required_key}":
            self._json(401, {"error": "Unauthorized"})  # vLLM's --api-key middleware
            return False
        return True

    def do_GET(self):  # noqa: N802 - http.server API
        if not self._authorised():
            return
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{
                "id": self.served, "object": "model", "created": 0, "owned_by": "vllm", "root": self.served,
                "parent": None, "max_model_len": self.max_model_len, "permission": []}]})
        else:
            self._json(404, {"detail": "Not Found"})  # FastAPI's answer for an unknown route (/props)

    def do_POST(self):  # noqa: N802
        if not self._authorised():
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append(body)
        self._check(body)
        if body.get("model") != self.served:
            return self._error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        if len(body["prompt"]) + body["max_tokens"] > self.max_model_len:
            return self._error(400, f"This model's maximum context length is {self.max_model_len} tokens. However, "
                                    f"you requested {len(body['prompt']) + body['max_tokens']} tokens.", "BadRequestError")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        usage_base = {"prompt_tokens": len(body["prompt"]),
                      "prompt_tokens_details": {"cached_tokens": self.cached}}
        for i, token in enumerate(self.answer_ids):
            choice = {"index": 0, "text": "<server text, not used>", "logprobs": None, "finish_reason": None,
                      "stop_reason": None, "token_ids": [token]}
            if i == 0:
                choice["prompt_token_ids"] = body["prompt"]
            chunk = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": self.served, "choices": [choice]}
            if body.get("stream_options", {}).get("continuous_usage_stats"):
                chunk["usage"] = {**usage_base, "completion_tokens": i + 1, "total_tokens": len(body["prompt"]) + i + 1}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        last = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": self.served, "choices": [
            {"index": 0, "text": "", "logprobs": None, "finish_reason": "length", "stop_reason": None, "token_ids": []}]}
        self.wfile.write(f"data: {json.dumps(last)}\n\n".encode())
        usage = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": self.served, "choices": [],
                 "usage": {**usage_base, "completion_tokens": len(self.answer_ids),
                           "total_tokens": len(body["prompt"]) + len(self.answer_ids)}}
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())

    def _check(self, body: dict) -> None:
        bad = type(self).problems
        unknown = set(body) - VLLM_REQUEST_FIELDS
        if unknown:
            bad.append(f"fields vLLM does not define: {sorted(unknown)}")
        if not (isinstance(body.get("prompt"), list) and all(isinstance(i, int) and i >= 0 for i in body["prompt"])):
            bad.append("prompt is not list[int >= 0]")
        if set(body.get("stream_options") or {}) - STREAM_OPTIONS:
            bad.append(f"stream_options: {body['stream_options']}")
        salt = body.get("cache_salt")
        if salt is not None and not (isinstance(salt, str) and 1 <= len(salt) <= 1024):
            bad.append("cache_salt must be a string of 1-1024 characters")
        if not all(isinstance(i, int) for i in body.get("stop_token_ids") or []):
            bad.append("stop_token_ids is not list[int]")
        if body.get("stream_options") and not body.get("stream"):
            bad.append("stream_options without stream")


@pytest.fixture
def vllm(monkeypatch):
    handler = type("Handler", (VLLMShapes,), {"received": [], "problems": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.delenv("CODELLAMA_LSP_API_KEY", raising=False)
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _backend(url: str, **settings):
    from codellama_lsp.config import Settings
    from codellama_lsp.engine import loading

    return loading.load_backend(Settings(model=str(TOKENIZER_DIR), model_explicit=True, backend="openai",
                                         endpoint=url, **settings))


@needs_shared
def test_requests_and_answers_have_vllms_documented_shapes(vllm):
    from codellama_lsp.engine.backend import GenerationParams

    handler, url = vllm
    backend = _backend(url)
    assert backend.server.dialect == "vllm" and backend.server.model == handler.served
    assert backend.server.context_window == 16384 and backend.server.returns_ids and backend.server.prefix_cache
    handler.answer_ids = backend.encode("    return a + b", leading_space=False)
    handler.cached = 16  # vLLM reuses whole 16-token blocks
    ids = backend.template.fim_ids("def add(a, b):\n", "\n\nprint(add(1, 2))\n", mode="spm")
    pieces: list[str] = []
    result = backend.generate(ids, GenerationParams(max_new_tokens=32, stop_token_ids=[32010, 2]),
                              on_text=pieces.append)
    assert handler.problems == []
    sent = handler.received[-1]
    assert sent["prompt"] == ids and sent["return_token_ids"] is True and sent["max_tokens"] == 32
    assert sent["stop_token_ids"] == [32010, 2] and sent["skip_special_tokens"] is False
    # text from the returned ids, detokenized here: the server's own "text" is never used
    assert result.text == "    return a + b" == "".join(pieces) and result.token_ids == handler.answer_ids
    assert result.stats.reused_tokens == 16 and result.stats.prefill_tokens == len(ids) - 16
    assert result.stats.stop_reason == "max_tokens"
    # the prefix-cache salt: stable for a user, different for another user's key, fresh per request when the
    # naive baseline (reuse_cache off) must miss every cached block
    salt = sent["cache_salt"]
    backend.generate(ids, GenerationParams(max_new_tokens=4))
    assert handler.received[-1]["cache_salt"] == salt
    backend.generate(ids, GenerationParams(max_new_tokens=4, reuse_cache=False))
    assert handler.received[-1]["cache_salt"] != salt
    backend.close()


@needs_shared
def test_vllm_errors_become_one_line_messages(vllm, tmp_path, monkeypatch):
    from codellama_lsp.engine.backend import GenerationParams, ModelLoadError
    from codellama_lsp.engine.remote import RemoteError

    handler, url = vllm
    with pytest.raises(ModelLoadError, match="does not serve model 'codellama/CodeLlama-70b-hf'"):
        _backend(url, remote_model="codellama/CodeLlama-70b-hf")
    backend = _backend(url)
    backend.server = type(backend.server)(**{**backend.server.describe(), "context_window": 0})
    with pytest.raises(RemoteError, match="does not fit the server's context window") as err:
        backend.generate(list(range(3, 16400)), GenerationParams(max_new_tokens=8))
    assert "\n" not in str(err.value)
    backend.server = type(backend.server)(**{**backend.server.describe(), "model": "gone"})
    with pytest.raises(RemoteError, match="does not serve model 'gone'"):
        backend.generate([1, 2, 3], GenerationParams(max_new_tokens=8))
    backend.close()
    handler.required_key = "team-key"
    with pytest.raises(ModelLoadError, match="refused the API key .*HTTP 401"):
        _backend(url)
    key = tmp_path / "key"
    key.write_text("team-key\n")
    keyed = _backend(url, api_key_file=str(key))
    other = tmp_path / "other"
    other.write_text("someone-else\n")
    handler.required_key = ""
    assert keyed.salt != _backend(url, api_key_file=str(other)).salt  # per-user prefix caches
    keyed.close()
