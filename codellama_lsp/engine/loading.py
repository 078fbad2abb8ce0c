"""Load the model the user meant the way it will run: runtime, device, dtype, quantization.

Which model that is comes from ``resolve.py`` (offline; the demo model stands in for the default one). Every
way loading can fail is turned into a :class:`ModelLoadError` whose message is one line saying what to run or
change. ``load_backend`` picks the backend: a remote server (``remote.py``), llama.cpp for a GGUF
(``llamacpp.py``), else transformers here.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

from ..config import DEFAULT_MODEL, Settings
from ..errors import first_line
from .backend import ModelLoadError
from .resolve import (DEMO_DIR, ResolvedModel, _pull_hint, context_window,  # noqa: F401 - re-exported
                      demo_available, find_in_hub_cache, hub_cache_dir, load_tokenizer_for, read_config, resolve_model)

Progress = Callable[[int, str], None]

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")


# ---------------------------------------------------------------------------------------------------------------
# device, dtype, quantization


def choose_device(setting: str = "auto") -> str:
    import torch

    if setting in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu (or auto)")
    if setting == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelLoadError("device 'mps' was requested but Metal is not available; use --device cpu (or auto)")
    return setting


def choose_dtype(setting: str, device: str, quantization: str = "none"):
    """fp32 on CPU (bf16 is several times slower there without AVX-512-BF16; research §4e); on CUDA bf16 only
    on compute capability 8.0+ (Ampere on), else fp16: ``torch.cuda.is_bf16_supported()`` also says yes where
    bf16 is emulated (T4, V100), and bitsandbytes' fast kernels there are fp16-only. 8-bit weights compute in
    fp16 (LLM.int8 casts anything else to fp16 on every call, with a warning). Always explicit: transformers 5
    otherwise keeps the checkpoint's dtype."""
    import torch

    if setting not in ("", "auto"):
        return getattr(torch, setting)
    if device.startswith("cuda"):
        if quantization == "8bit":
            return torch.float16
        return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def cuda_has_native_bf16(device: str = "cuda") -> bool:
    """Whether the GPU computes bf16 in hardware (compute capability 8.0 or later)."""
    import torch

    try:
        index = torch.device(device).index
        major, _minor = torch.cuda.get_device_capability(index if index is not None else 0)
    except Exception:  # noqa: BLE001 - no CUDA, or a driver that cannot answer: fp16 is the safe choice
        return False
    return major >= 8 and bool(torch.cuda.is_bf16_supported())


def bitsandbytes_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def choose_quantization(setting: str, device: str, dtype_setting: str = "auto") -> str:
    """auto = 4bit (nf4) on CUDA, where it is fast, when bitsandbytes is installed; none elsewhere (nf4 on CPU
    runs ~30x slower than fp32) and with float64, which bitsandbytes cannot compute in. An explicit 4bit/8bit
    with float64 is refused with a one-line error instead of failing at the first forward pass."""
    wide = str(dtype_setting).replace("torch.", "") == "float64"
    if setting in ("", "auto"):
        return "4bit" if device.startswith("cuda") and not wide and bitsandbytes_installed() else "none"
    if wide and setting in ("4bit", "8bit"):
        raise ModelLoadError(f"--quantization {setting} cannot compute in float64; use --quantization none "
                             "(or auto) with --dtype float64, or another dtype")
    return setting


def quantization_config(quantization: str, dtype):
    """A BitsAndBytesConfig (quantization_config=; transformers 5 rejects load_in_4bit=) or None."""
    if quantization == "none":
        return None
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except Exception as exc:  # ImportError, or a broken native library raising anything
        raise ModelLoadError(
            f"--quantization {quantization} needs a working bitsandbytes ({type(exc).__name__}: {first_line(exc, limit=300)}); "
            "run `pip install bitsandbytes` or use --quantization none"
        ) from None
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ModelLoadError(f"unknown quantization '{quantization}'; use 4bit, 8bit or none")


# ---------------------------------------------------------------------------------------------------------------
# checkpoint checks that give better messages than the stack trace from from_pretrained


def check_architecture(config: dict[str, Any], path: Path) -> None:
    """Reject configs transformers cannot run as a causal LM, naming the model type."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    if not model_type:
        raise ModelLoadError(f"{path}/config.json has no model_type; this does not look like a transformers checkpoint")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise ModelLoadError(
            f"unsupported architecture '{model_type}' in {path}: transformers does not know it; "
            "use a Code Llama-family model (Llama, StarCoder2, DeepSeek-Coder, Qwen2.5-Coder, Codestral)"
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(
            f"unsupported architecture '{model_type}' in {path}: it is not a text-generating (causal LM) model; "
            "use a Code Llama-family model"
        )


def weight_files(path: Path) -> list[Path]:
    files: list[Path] = []
    for pattern in WEIGHT_PATTERNS:
        files += sorted(p for p in path.glob(pattern) if p.is_file())
    return files


def check_weights(path: Path, name: str) -> None:
    """Missing or unreadable weights, found before transformers prints a long stack trace about them."""
    files = weight_files(path)
    if not files:
        raise ModelLoadError(f"no model weights (*.safetensors) in {path}; the download is incomplete: {_pull_hint(name)}")
    for file in files:
        if file.suffix != ".safetensors":
            continue
        try:
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception as exc:
            raise ModelLoadError(
                f"corrupt checkpoint file {file} ({first_line(exc, limit=300)}); delete it and re-download: {_pull_hint(name)}"
            ) from None


def is_out_of_memory(exc: BaseException) -> bool:
    import sys

    torch = sys.modules.get("torch")  # never imported just to ask (the GGUF path runs without torch)
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or "cannot allocate memory" in text
        or isinstance(exc, MemoryError)
    )


def oom_message(name: str, quantization: str, device: str) -> str:
    hint = (
        "use --quantization 4bit or a smaller model"
        if quantization != "4bit"
        else "use a smaller model (e.g. a 7B) or free GPU memory"
    )
    return f"out of memory loading '{name}' on {device} with quantization {quantization}; {hint}"


class _OnceFilter:
    """Lets the first record with a given message template through, drops the repeats."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def filter(self, record) -> bool:
        key = str(record.msg)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def quiet_int8_cast_warning() -> None:
    """LLM.int8 with a non-fp16 compute dtype logs "inputs will be cast ... to float16" on every linear call
    (224 lines per token for a 7B): keep the first, drop the rest."""
    import logging

    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _OnceFilter) for f in logger.filters):
        logger.addFilter(_OnceFilter())


def load_model(resolved: ResolvedModel, *, device: str, dtype, quantization: str):
    """``from_pretrained`` with every failure mapped to a one-line ModelLoadError."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    config = read_config(resolved.path, resolved.name)
    check_architecture(config, resolved.path)
    check_weights(resolved.path, resolved.name)
    qconfig = quantization_config(quantization, dtype)
    if quantization == "8bit":
        quiet_int8_cast_warning()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": "sdpa", "local_files_only": True}
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        kwargs["device_map"] = {"": device if device != "cuda" else "cuda:0"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(str(resolved.path), **kwargs)
        if qconfig is None:
            model = model.to(device)
        model.eval()
    except ModelLoadError:
        raise
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        if is_out_of_memory(exc):
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            raise ModelLoadError(oom_message(resolved.name, quantization, device)) from None
        text = first_line(exc, limit=300)
        if "bitsandbytes" in text.lower():
            raise ModelLoadError(
                f"--quantization {quantization} failed in bitsandbytes ({text}); use --quantization none, "
                "or reinstall bitsandbytes for this platform"
            ) from None
        if "safetensor" in type(exc).__name__.lower() or "deserializ" in text.lower() or "unpickl" in text.lower():
            raise ModelLoadError(f"corrupt checkpoint in {resolved.path} ({text}); re-download: {_pull_hint(resolved.name)}") from None
        raise ModelLoadError(f"could not load model '{resolved.name}' from {resolved.path}: {type(exc).__name__}: {text}") from None
    return model


def load_backend(settings: Settings, progress: Progress | None = None):
    """Resolve, load tokenizer + template + weights, and return a ready :class:`LocalBackend`.

    ``progress(percent, message)`` is called at each stage (the server turns it into ``$/progress``)."""
    if getattr(settings, "backend", "local") != "local":  # opt-in remote server: the only network use
        from .remote import load_remote_backend

        return load_remote_backend(settings, progress)
    report = progress or (lambda _pct, _msg: None)
    report(2, f"resolving model {settings.model}")
    gguf = load_gguf_if_asked(settings, progress)
    if gguf is not None:
        return gguf
    resolved = resolve_model(settings.model, explicit=settings.model_explicit)
    device = choose_device(settings.device)
    quantization = choose_quantization(settings.quantization, device, settings.dtype)
    dtype = choose_dtype(settings.dtype, device, quantization)
    config = read_config(resolved.path, resolved.name)
    check_architecture(config, resolved.path)
    check_weights(resolved.path, resolved.name)
    report(10, f"loading tokenizer from {resolved.path}")
    tokenizer = load_tokenizer_for(resolved)
    from .templates import template_for

    try:
        template = template_for(tokenizer, model_name=resolved.name, config=config, override=settings.template, fim=settings.fim)
    except ValueError as exc:  # TemplateError: e.g. a template override the tokenizer cannot serve
        raise ModelLoadError(first_line(exc, limit=300)) from None
    report(20, f"loading weights ({quantization}, {str(dtype).replace('torch.', '')}, {device})")
    model = load_model(resolved, device=device, dtype=dtype, quantization=quantization)
    draft = None
    if settings.speculation == "draft" and settings.draft_model:
        report(80, f"loading draft model {settings.draft_model}")
        draft_resolved = resolve_model(settings.draft_model, explicit=True)
        draft = load_model(draft_resolved, device=device, dtype=dtype, quantization="none")
    from .backend import ModelInfo
    from .local import LocalBackend

    info = ModelInfo(
        name=resolved.name,
        path=str(resolved.path),
        family=template.family,
        fim=template.fim,
        device=str(next(model.parameters()).device),
        dtype=str(dtype).replace("torch.", ""),
        quantization=quantization,
        context_length=context_window(config),
        is_demo=resolved.is_demo,
    )
    backend = LocalBackend(model, tokenizer, template, info, settings=settings, draft_model=draft, notice=resolved.notice)
    report(100, "model ready" + (f" ({resolved.notice})" if resolved.notice else ""))
    return backend


def load_gguf_if_asked(settings: Settings, progress: Progress | None = None):
    """The llama.cpp backend when the model is a GGUF (``runtime = "auto"`` or ``"llamacpp"``), else None.

    ``runtime = "llamacpp"`` with the bundled demo model (named, or standing in for the default) runs the demo
    converted to GGUF. Loads nothing from torch or transformers (see ``engine/llamacpp.py``)."""
    runtime = getattr(settings, "runtime", "auto") or "auto"
    name = (settings.model or DEFAULT_MODEL).strip()
    from .llamacpp import find_gguf, load_llamacpp_backend

    path = find_gguf(name, getattr(settings, "gguf_file", "") or "")
    if runtime == "transformers":
        if path is not None:
            raise ModelLoadError(f"'{name}' is a GGUF model, which the transformers runtime does not run; set "
                                 "runtime = \"auto\" or \"llamacpp\" (or pass a transformers model directory)")
        return None
    if path is not None:
        return load_llamacpp_backend(settings, path, name=name, progress=progress)
    if runtime != "llamacpp":
        return None
    resolved = resolve_model(name, explicit=settings.model_explicit)
    if not resolved.is_demo:
        raise ModelLoadError(f"runtime = \"llamacpp\" needs a GGUF model and '{name}' is a transformers checkpoint; "
                             "pass a .gguf file with --model (or set runtime = \"auto\")")
    from .gguf_convert import demo_gguf

    return load_llamacpp_backend(settings, demo_gguf(), name=resolved.name, is_demo=True, notice=resolved.notice,
                                 progress=progress)
