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
from typing import Any, Callable

DEFAULT_MODEL = "codellama/CodeLlama-7b-Instruct-hf"
DEMO_MODEL = "demo"
SIZES = "sizes"  # ``reloads`` of a setting the loaded model is sized for (see ``setting``)


def setting(default: Any = None, *, choices: tuple[str, ...] = (), reloads: bool | str | tuple[str, ...] = False,
            doc: str = "", internal: bool = False, default_factory: Any = None) -> Any:
    """A settings field with what the rest of the program derives from it, declared once:

    - ``choices``: the allowed values (validation, argparse ``choices``, the docs table);
    - ``reloads``: True when a change needs the model loaded again; a tuple of values when only a change
      into or out of one of them does (``speculation``: the draft model is loaded for "draft" only);
      ``SIZES`` when the loaded model was sized for the value and only a value it cannot hold needs a new one
      (``context_tokens``: llama.cpp allocates its context at load; lowering it, or raising it within that
      context, keeps the model; the loaded backend answers, see ``reload_reasons``);
    - ``doc``: the meaning, as the settings table in the README shows it;
    - ``internal``: set by the program, not a user setting.
    """
    metadata = {"choices": tuple(choices), "reloads": reloads, "doc": doc, "internal": internal}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Settings:
    # model
    model: str = setting(DEFAULT_MODEL, reloads=True,
                         doc="local directory, `.gguf` file, Hugging Face id in the local cache, or `demo`")
    model_explicit: bool = setting(False, internal=True)  # True when the user named the model (never silently replaced then)
    runtime: str = setting("auto", choices=("auto", "transformers", "llamacpp"), reloads=True,
                           doc="what runs a local model: `llamacpp` for a GGUF model (auto), `transformers` for a "
                               "checkpoint directory (auto); `llamacpp` with `demo` runs the demo converted to GGUF")
    gguf_file: str = setting("", reloads=True, doc="which `.gguf` of a directory or cached Hub repo holding several")
    n_threads: int = setting(0, reloads=True, doc="llama.cpp threads (0: all cores but one)")
    n_gpu_layers: int = setting(0, reloads=True,
                                doc="llama.cpp layers offloaded to a GPU (a CUDA or Metal build of llama-cpp-python)")
    chat_model: str = setting("", doc="a separate chat/actions model (loaded once, shared); \"\" = the completion model")
    draft_model: str = setting("", reloads=True, doc="small model sharing the tokenizer, for `speculation = \"draft\"`")
    quantization: str = setting("auto", choices=("auto", "4bit", "8bit", "none"), reloads=True,
                                doc="`4bit` (nf4 + double quant; auto on CUDA), `8bit`, `none` (auto on CPU)")
    device: str = setting("auto", choices=("auto", "cpu", "cuda", "mps"), reloads=True, doc="CUDA when present")
    dtype: str = setting("auto", choices=("auto", "float32", "float16", "bfloat16", "float64"), reloads=True,
                         doc="bf16 on GPUs of compute capability ≥ 8.0, else fp16; fp32 on CPU; float64 for exactness "
                             "checks (slow)")
    template: str = setting("auto", choices=("auto", "codellama", "starcoder2", "deepseek", "qwen", "codestral"),
                            reloads=True, doc="prompt format (auto: from the model)")
    fim: bool | None = setting(None, reloads=True, doc="infilling on or off (null: decide from the model's name/config)")
    fim_mode: str = setting("auto", choices=("auto", "spm", "psm"),
                            doc="`spm` (suffix first: typing re-uses the KV cache; what `auto` picks for Code Llama) "
                                "or `psm` (auto: the checkpoint's `preferred_fim_mode`, else SPM)")
    # completion
    max_tokens: int = setting(128, doc="tokens generated per inline completion")
    temperature: float = setting(0.0, doc="sampling temperature (0: greedy)")
    top_p: float = setting(0.95, doc="nucleus sampling when the temperature is above 0")
    completion_timeout_s: float = setting(10.0, doc="wall-clock budget of one completion")
    alternatives: int = setting(3, doc="suggestions for an explicit request or \"next\" (distinct, ranked, sampled on "
                                       "the cached prompt: no second prefill); typing gets one")
    alternatives_time_factor: float = setting(
        2.0, doc="once there is one alternative, no new sample starts after the samples took this many times the "
                 "first suggestion's time (at least 0.5 s counted); 0 = no bound but `completion_timeout_s`")
    debounce_ms: int = setting(0, doc="server-side debounce (clients debounce already)")
    speculation: str = setting("prompt_lookup", choices=("none", "prompt_lookup", "draft"), reloads=("draft",),
                               doc="`none`, `prompt_lookup` (drafts from the prompt itself), `draft` (with `draft_model`)")
    reuse_cache: bool = setting(True, doc="reuse the KV cache across requests (off = the naive path, for comparison)")
    kv_cache: str = setting("dynamic", choices=("dynamic", "quantized", "static"), reloads=True,
                            doc="`quantized` (fp8) saves memory at long contexts, never time, and cannot be cropped "
                                "(less reuse); `static` preallocates the cache and writes it in place, with the "
                                "one-token step replayed as a CUDA graph on a GPU (Llama-layout models)")
    context_tokens: int = setting(4096, reloads=SIZES,
                                  doc="the whole prompt's budget, up to the model's window (16k; Code Llama stays "
                                      "stable to 100k); llama.cpp sizes its context for it at load")
    repo_context: bool = setting(True, doc="repository snippets (definitions, imports, recent edits, open files, "
                                           "similar code)")
    # workspace index: caps that hold under any tree; a root that is /, the home directory or no project is
    # indexed only around the open files unless index_broad_roots
    index_max_files: int = setting(20_000, doc="most files the workspace index holds")
    index_memory_mb: int = setting(200, doc="memory budget of the workspace index")
    index_broad_roots: bool = setting(False, doc="index a root that is `/`, the home directory or no project (else "
                                                 "only around open files; [docs/context.md](docs/context.md))")
    disabled_languages: list[str] = setting(default_factory=list, doc="languages where automatic suggestions are off")
    # chat
    chat_max_tokens: int = setting(512, doc="tokens generated per chat answer or code action")
    # remote backend (off unless configured): an OpenAI-compatible /v1/completions server. Keys never live in
    # settings: the bearer token is read from the environment variable named by api_key_env, or from api_key_file.
    backend: str = setting("local", choices=("local", "openai", "llamacpp-server", "vllm"), reloads=True,
                           doc="`openai` (detects llama.cpp / vLLM / text-only servers), `llamacpp-server` or `vllm` "
                               "at `endpoint`: generation on a team server "
                               "([docs/team-server.md](docs/team-server.md))")
    endpoint: str = setting("", reloads=True, doc="the team server's URL")
    remote_model: str = setting("", reloads=True, doc="the team server's model name (\"\": the one it serves)")
    api_key_env: str = setting("CODELLAMA_LSP_API_KEY", reloads=True,
                               doc="environment variable holding the team server's key (never in editor settings)")
    api_key_file: str = setting("", reloads=True, doc="file holding the team server's key")
    ca_bundle: str = setting("", reloads=True, doc="extra CA certificates (PEM) trusted for an https endpoint")
    connect_timeout_s: float = setting(5.0, reloads=True, doc="team server connect timeout")
    read_timeout_s: float = setting(30.0, reloads=True, doc="team server read timeout")
    cache_salt: str = setting("", reloads=True, doc="vLLM prefix-cache isolation (\"\": derived per user)")
    # command line
    resident_minutes: float = setting(10.0, doc="`complete` keeps the model in a resident process this long when "
                                                "idle (0 = off)")
    # observability
    log_level: str = setting("info", choices=("error", "warning", "info", "debug"), doc="log level")
    log_document_text: bool = setting(False, doc="document text is never logged unless this is on")

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

    def load_spec(self) -> dict[str, Any]:
        """What decides the loaded model: two settings with the same spec load the same thing."""
        spec = {}
        for f in fields(self):
            reloads, value = f.metadata["reloads"], getattr(self, f.name)
            if reloads is True:
                spec[f.name] = value
            elif isinstance(reloads, tuple):
                spec[f.name] = value if value in reloads else None
        return spec


# --- derived from the field metadata ---------------------------------------------------------------

SETTINGS_FIELDS = tuple(f for f in fields(Settings) if not f.metadata["internal"])
#: Allowed values of the settings that have a fixed set.
CHOICES: dict[str, tuple[str, ...]] = {f.name: f.metadata["choices"] for f in SETTINGS_FIELDS if f.metadata["choices"]}
#: Settings whose change (any change, or one into or out of the listed values) loads the model again.
RELOAD_KEYS = tuple(f.name for f in SETTINGS_FIELDS if f.metadata["reloads"])


def choices(name: str) -> tuple[str, ...]:
    """The allowed values of setting ``name`` (for argparse ``choices``)."""
    return CHOICES[name]


def reload_reasons(old: Settings, new: Settings, holds: Callable[[Settings], bool] | None = None) -> list[str]:
    """The settings whose change from ``old`` to ``new`` needs the model loaded again.

    A changed setting the model is sized for (``reloads=SIZES``) counts when ``holds(new)``, the loaded model's
    answer, is False; without ``holds`` (nothing is loaded: a load is under way or failed) it always counts."""
    before, after = old.load_spec(), new.load_spec()
    reasons = [name for name in before if before[name] != after[name]]
    sized = [f.name for f in SETTINGS_FIELDS if f.metadata["reloads"] == SIZES
             and getattr(old, f.name) != getattr(new, f.name)]
    if sized and (holds is None or not holds(new)):
        reasons += sized
    return reasons


def settings_table() -> str:
    """The README's settings table (Markdown), one row per setting; tools/settings_table.py writes it, tests/test_config_docs.py checks it."""
    rows = ["| setting | default | values | reloads the model | meaning |", "|---|---|---|---|---|"]
    for f in SETTINGS_FIELDS:
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        values = ", ".join(f"`{v}`" for v in f.metadata["choices"])
        reloads = f.metadata["reloads"]
        reload_text = ("yes" if reloads is True else "when raised past what the loaded model was sized for" if reloads == SIZES
                       else f"to or from {', '.join(f'`{v}`' for v in reloads)}" if reloads else "")
        rows.append(f"| `{f.name}` | {_markdown_value(default)} | {values} | {reload_text} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"


def _markdown_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"`{value}`" if value else '""'
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:_}".replace("_", " ") if value >= 10_000 else str(value)
    return f"`{value!r}`" if not isinstance(value, list) else "[]" if not value else str(value)


def _snake(name: str) -> str:
    out = []
    for ch in name:
        if ch.isupper():
            out.append("_" + ch.lower())
        else:
            out.append(ch)
    return "".join(out).replace("-", "_")


def _coerce(key: str, value: Any, current: Any) -> Any:
    if key in CHOICES:
        if not isinstance(value, str) or value.lower() not in CHOICES[key]:
            raise ValueError(f"expected one of {', '.join(CHOICES[key])}, got {value!r}")
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
