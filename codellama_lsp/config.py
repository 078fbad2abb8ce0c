"""One typed settings object for the whole program.

Sources, later wins: defaults < TOML file in the platformdirs config dir < environment
(``CODELLAMA_LSP_MODEL``) < command line < LSP ``initializationOptions`` < ``workspace/didChangeConfiguration``
/ ``workspace/configuration``. ``Settings.updated`` validates each value; a bad value is reported by
name and the previous (or default) value is kept, so a typo never takes the assistant down.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "codellama/CodeLlama-7b-Instruct-hf"
DEMO_MODEL = "demo"

_CHOICES: dict[str, tuple[str, ...]] = {
    "quantization": ("auto", "4bit", "8bit", "none"),
    "device": ("auto", "cpu", "cuda", "mps"),
    "dtype": ("auto", "float32", "float16", "bfloat16", "float64"),  # float64: exactness checks, slow
    "fim_mode": ("auto", "spm", "psm"),
    "template": ("auto", "codellama", "starcoder2", "deepseek", "qwen", "codestral"),
    "speculation": ("none", "prompt_lookup", "draft"),
    "kv_cache": ("dynamic", "quantized", "static"),
    "backend": ("local", "openai", "llamacpp-server", "vllm"),
    "runtime": ("auto", "transformers", "llamacpp"),
    "log_level": ("error", "warning", "info", "debug"),
}


@dataclass
class Settings:
    # model
    model: str = DEFAULT_MODEL  # local dir, HF id in the local cache, or "demo"
    model_explicit: bool = False  # True when the user named the model (never silently replaced then)
    # what runs a local model: auto = llama.cpp for a GGUF file, transformers for a checkpoint directory
    runtime: str = "auto"
    gguf_file: str = ""  # which .gguf of a directory or cached Hub repo holding several
    n_threads: int = 0  # llama.cpp threads; 0 = all cores but one
    n_gpu_layers: int = 0  # llama.cpp layers offloaded to a GPU (a CUDA or Metal build of llama-cpp-python)
    chat_model: str = ""  # separate chat model; "" = the completion model serves chat too
    draft_model: str = ""  # small model sharing the tokenizer, for speculation = "draft"
    quantization: str = "auto"  # auto = 4bit on CUDA, none on CPU
    device: str = "auto"
    dtype: str = "auto"
    template: str = "auto"
    fim: bool | None = None  # None = decide from the model's name/config
    fim_mode: str = "auto"  # auto = the checkpoint's preferred layout (config.json "preferred_fim_mode"), else SPM
    # completion
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 0.95
    completion_timeout_s: float = 10.0
    alternatives: int = 3  # suggestions offered for an invoked request ("next"); automatic requests get one
    # once there is one alternative, no new sample starts after they took this many times the first
    # suggestion's time (counted as at least 0.5 s); 0 = only completion_timeout_s bounds them
    alternatives_time_factor: float = 2.0
    debounce_ms: int = 0
    speculation: str = "prompt_lookup"
    reuse_cache: bool = True  # reuse the KV cache between requests (false = re-prefill every prompt: the naive baseline)
    kv_cache: str = "dynamic"
    context_tokens: int = 4096  # the whole prompt's budget
    repo_context: bool = True
    # workspace index: caps that hold under any tree; a root that is /, the home directory or no project is
    # indexed only around the open files unless index_broad_roots
    index_max_files: int = 20_000
    index_memory_mb: int = 200
    index_broad_roots: bool = False
    disabled_languages: list[str] = field(default_factory=list)
    # chat
    chat_max_tokens: int = 512
    # remote backend (off unless configured): an OpenAI-compatible /v1/completions server
    # ("openai" = detect the server's kind; "llamacpp-server" / "vllm" name it). Keys never live in settings: the
    # bearer token is read from the environment variable named by api_key_env, or from the file api_key_file.
    backend: str = "local"
    endpoint: str = ""
    remote_model: str = ""  # the server's model name ("" = the one it serves)
    api_key_env: str = "CODELLAMA_LSP_API_KEY"
    api_key_file: str = ""
    ca_bundle: str = ""  # extra CA certificates (PEM) trusted for an https endpoint, besides the system store
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    cache_salt: str = ""  # vLLM prefix-cache isolation; "" = derived per user (from the API key, else user@host)
    # command line: `complete` keeps the model in a resident process for this many idle minutes (0 = off)
    resident_minutes: float = 10.0
    # observability
    log_level: str = "info"
    log_document_text: bool = False

    def updated(self, values: dict[str, Any] | None) -> tuple["Settings", list[str]]:
        """A copy with ``values`` applied; returns (settings, errors naming each rejected setting)."""
        errors: list[str] = []
        changes: dict[str, Any] = {}
        known = {f.name: f for f in fields(self)}
        for raw_key, value in (values or {}).items():
            key = _snake(raw_key)
            if key not in known or key == "model_explicit":
                errors.append(f"unknown setting '{raw_key}'")
                continue
            try:
                changes[key] = _coerce(key, value, getattr(self, key))
            except ValueError as exc:
                errors.append(f"setting '{raw_key}': {exc}; keeping {getattr(self, key)!r}")
        if "model" in changes and changes["model"] != self.model:
            changes["model_explicit"] = True
        return dataclasses.replace(self, **changes), errors

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _snake(name: str) -> str:
    out = []
    for ch in name:
        if ch.isupper():
            out.append("_" + ch.lower())
        else:
            out.append(ch)
    return "".join(out).replace("-", "_")


def _coerce(key: str, value: Any, current: Any) -> Any:
    if key in _CHOICES:
        if not isinstance(value, str) or value.lower() not in _CHOICES[key]:
            raise ValueError(f"expected one of {', '.join(_CHOICES[key])}, got {value!r}")
        return value.lower()
    if key == "fim":
        if value is None or isinstance(value, bool):
            return value
        raise ValueError(f"expected true, false or null, got {value!r}")
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"expected a non-negative integer, got {value!r}")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"expected a non-negative number, got {value!r}")
        return float(value)
    if isinstance(current, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of strings, got {value!r}")
        return list(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def config_file_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("codellama-lsp")) / "config.toml"


def load_settings(cli_values: dict[str, Any] | None = None, path: Path | None = None) -> tuple[Settings, list[str]]:
    """Defaults < config file < CODELLAMA_LSP_MODEL < command-line values. Returns (settings, errors)."""
    settings, errors = Settings(), []
    path = path or config_file_path()
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            errors.append(f"config file {path}: {exc}; using defaults")
        else:
            settings, errs = settings.updated(data)
            errors += [f"{path}: {e}" for e in errs]
    env_model = os.environ.get("CODELLAMA_LSP_MODEL")
    if env_model:
        settings, errs = settings.updated({"model": env_model})
        errors += errs
    if cli_values:
        settings, errs = settings.updated({k: v for k, v in cli_values.items() if v is not None})
        errors += errs
    return settings, errors
