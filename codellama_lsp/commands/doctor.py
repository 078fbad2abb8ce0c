"""`codellama-lsp doctor`: can this machine run the configured model, and how?

Reports device, VRAM/RAM, library versions, the model (found or not, resolved path, demo fallback),
quantization, tokenizer/template family, tree-sitter grammars, and the memory estimate for weights + KV
cache at the configured context length; then loads the model (unless ``--no-load``) to prove it works.
A model that cannot be loaded ends the report with ``codellama-lsp: error: <what to do>`` and exit 2.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


from ..config import choices
from . import CONFIG_HELP, add_model_arguments, runtime_values


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--dtype", choices=choices("dtype"))
    parser.add_argument("--context-tokens", type=int, metavar="N", help="context length for the KV-cache estimate")
    parser.add_argument("--no-load", action="store_true", help="only inspect; do not load the model")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--workspace", metavar="DIR",
                        help="also index DIR as the server would (same caps; the persisted index is reused) "
                             "and say how many files are indexed, how many were skipped and why")


def _grammars() -> list[str]:
    import pkgutil

    return sorted(m.name[len("tree_sitter_") :] for m in pkgutil.iter_modules() if m.name.startswith("tree_sitter_"))


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for dist in ("codellama-lsp", "torch", "transformers", "tokenizers", "bitsandbytes", "llama-cpp-python", "pygls"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _machine(device: str) -> dict[str, Any]:
    import psutil
    import torch

    mem = psutil.virtual_memory()
    info: dict[str, Any] = {
        "device": device,
        "ram_total_gib": round(mem.total / 2**30, 1),
        "ram_available_gib": round(mem.available / 2**30, 1),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        info["gpu"] = torch.cuda.get_device_name(0)
        info["vram_total_gib"] = round(total / 2**30, 1)
        info["vram_free_gib"] = round(free / 2**30, 1)
    return info


def collect(settings, *, load: bool) -> tuple[dict[str, Any], Exception | None]:
    """The whole report as a dict, and the load error (if any) that makes the exit status non-zero."""
    from ..engine import memory
    from ..engine.backend import EngineError
    from ..engine.loading import choose_device, choose_dtype, choose_quantization, read_config, resolve_model

    report: dict[str, Any] = {"versions": _versions()}
    error: Exception | None = None
    try:
        device = choose_device(settings.device)
    except EngineError as exc:
        device, error = "cpu", exc
    report["machine"] = _machine(device)
    try:
        quantization = choose_quantization(settings.quantization, device, settings.dtype)
    except EngineError as exc:
        quantization, error = settings.quantization, exc
    dtype = str(choose_dtype(settings.dtype, device, quantization)).replace("torch.", "")
    report["grammars"] = _grammars()
    model: dict[str, Any] = {"requested": settings.model, "quantization": quantization, "dtype": dtype, "found": False}
    report["model"] = model
    report["prompts"] = prompts_destination(settings)
    if error is not None:
        return report, error
    if getattr(settings, "backend", "local") != "local":
        return report, _remote_report(settings, model, load=load)
    try:
        if _gguf_report(settings, model, load=load):
            return report, None
        model["runtime"] = "transformers"
        resolved = resolve_model(settings.model, explicit=settings.model_explicit)
        model.update(found=True, path=str(resolved.path), is_demo=resolved.is_demo)
        if resolved.notice:
            model["notice"] = resolved.notice
        config = read_config(resolved.path, resolved.name)
        model["model_type"] = config.get("model_type")
        model["context_length"] = config.get("max_position_embeddings")
        try:
            est = memory.estimate(
                config,
                quantization=quantization,
                dtype=dtype,
                context_tokens=settings.context_tokens,
                kv_cache=settings.kv_cache,
                device=device,
            )
            report["memory_estimate"] = {**est.as_dict(), "kv_cache": settings.kv_cache}
            machine = report["machine"]
            available = machine.get("vram_free_gib") if device.startswith("cuda") else machine["ram_available_gib"]
            report["memory_estimate"]["margin"] = memory.FIT_MARGIN
            report["memory_estimate"]["fits"] = est.fits((available or 0) * memory.GIB)
        except ValueError as exc:
            report["memory_estimate"] = {"error": str(exc)}
        if load:
            from ..engine.loading import load_backend

            start = time.perf_counter()
            backend = load_backend(settings)
            model["loaded"] = True
            model["load_s"] = round(time.perf_counter() - start, 2)
            model["device"] = backend.info.device
            model["quantization"] = backend.info.quantization
            model["dtype"] = backend.info.dtype
            model["template_family"] = backend.info.family
            model["fim"] = backend.info.fim
            model["tokenizer"] = type(backend.tokenizer).__name__ + f" (vocab {backend.tokenizer.vocab_size})"
            try:
                model["footprint_gib"] = round(backend.model.get_memory_footprint() / 2**30, 3)
            except Exception:  # noqa: BLE001 - informative only
                pass
            backend.close()
        else:
            from ..engine.templates import template_for
            from ..engine.tokenizer import load_tokenizer

            template = template_for(load_tokenizer(resolved.path), model_name=resolved.name, config=config,
                                    override=settings.template, fim=settings.fim)
            model["template_family"] = template.family
            model["fim"] = template.fim
    except EngineError as exc:
        model["error"] = str(exc)
        error = exc
    return report, error


def prompts_destination(settings) -> dict[str, Any]:
    """Where prompts (document text) go: the privacy promise, stated exactly."""
    if getattr(settings, "backend", "local") == "local":
        return {"destination": "this machine only", "detail": "the model runs in-process; no network connection is opened"}
    from ..engine.remote import API_KEY_ENV

    endpoint = settings.endpoint or "(no endpoint set)"
    key_env = getattr(settings, "api_key_env", "") or API_KEY_ENV
    if getattr(settings, "api_key_file", ""):
        key = f"from the file {settings.api_key_file}"
    elif os.environ.get(key_env):
        key = f"from the environment variable {key_env}"
    else:
        key = f"none (set {key_env} or api_key_file if the server wants one)"
    return {
        "destination": endpoint,
        "detail": f"prompts are sent to {endpoint} only ({'TLS' if endpoint.startswith('https://') else 'UNENCRYPTED http'}); "
                  "nothing else leaves the machine",
        "api_key": key,
        "ca_bundle": getattr(settings, "ca_bundle", "") or "system CA store",
    }


def _remote_report(settings, model: dict[str, Any], *, load: bool) -> Exception | None:
    """The remote backend: the local tokenizer, and (with ``load``) what the server says it is."""
    from ..engine.backend import EngineError

    model["runtime"] = f"remote ({settings.backend})"
    try:
        if not load:
            from ..engine.remote import _local_tokenizer
            from ..engine.templates import template_for

            resolved, config, tokenizer = _local_tokenizer(settings)
            template = template_for(tokenizer, model_name=resolved.name, config=config, override=settings.template,
                                    fim=settings.fim)
            model.update(found=True, path=str(resolved.path), template_family=template.family, fim=template.fim)
            return None
        from ..engine.loading import load_backend

        start = time.perf_counter()
        backend = load_backend(settings)
        try:
            model.update(found=True, path=backend.info.path, loaded=True, load_s=round(time.perf_counter() - start, 2),
                         device=backend.info.device, quantization=backend.info.quantization, dtype=backend.info.dtype,
                         template_family=backend.info.family, fim=backend.info.fim,
                         context_length=backend.info.context_length, server=backend.server.describe())
        finally:
            backend.close()
    except EngineError as exc:
        model["error"] = str(exc)
        return exc
    return None


def _gguf_report(settings, model: dict[str, Any], *, load: bool) -> bool:
    """Fill ``model`` for a GGUF model (the llama.cpp runtime); False when the model is not one."""
    from ..engine.gguf_file import architecture, config_from_metadata, read_metadata
    from ..engine.llamacpp import _file_type, find_gguf

    runtime = getattr(settings, "runtime", "auto")
    path = find_gguf((settings.model or "").strip() or "demo", getattr(settings, "gguf_file", "") or "") \
        if runtime != "transformers" else None
    if path is None and not (runtime == "llamacpp" and load):
        return False
    model["runtime"] = "llamacpp"
    if path is not None:
        meta = read_metadata(path)
        config = config_from_metadata(meta)
        model.update(found=True, path=str(path), model_type=architecture(meta), quantization=_file_type(meta),
                     dtype=_file_type(meta), context_length=config.get("max_position_embeddings"),
                     file_gib=round(path.stat().st_size / 2**30, 3))
    if load:
        from ..engine.loading import load_backend

        start = time.perf_counter()
        backend = load_backend(settings)
        model.update(found=True, path=backend.info.path, is_demo=backend.info.is_demo, loaded=True,
                     load_s=round(time.perf_counter() - start, 2), device=backend.info.device,
                     quantization=backend.info.quantization, dtype=backend.info.dtype,
                     template_family=backend.info.family, fim=backend.info.fim,
                     tokenizer=f"{backend.tokenizer.kind} from the GGUF (vocab {backend.tokenizer.vocab_size})")
        backend.close()
    else:
        from ..engine.gguf_file import load_gguf_tokenizer
        from ..engine.templates import template_for

        template = template_for(load_gguf_tokenizer(path), model_name=str(path), config=config,
                                override=settings.template, fim=settings.fim)
        model.update(template_family=template.family, fim=template.fim)
    return True


def _print_text(report: dict[str, Any]) -> None:
    machine, model, versions = report["machine"], report["model"], report["versions"]
    line = f"device        {machine['device']}"
    if "gpu" in machine:
        line += f" ({machine['gpu']}, VRAM {machine['vram_free_gib']} of {machine['vram_total_gib']} GiB free)"
    print(line)
    print(f"RAM           {machine['ram_available_gib']} of {machine['ram_total_gib']} GiB available")
    print("versions      " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if model.get("found"):
        demo = " (bundled demo model)" if model.get("is_demo") else ""
        print(f"model         {model['requested']} -> {model['path']}{demo}")
        if model.get("notice"):
            print(f"notice        {model['notice']}")
    else:
        print(f"model         {model['requested']}: NOT FOUND")
    print(f"runtime       {model.get('runtime', 'transformers')}")
    print(f"quantization  {model['quantization']} ({model['dtype']})")
    if "template_family" in model:
        print(f"tokenizer     {model['template_family']} family, {'infills (FIM)' if model.get('fim') else 'left-to-right only'}")
    est = report.get("memory_estimate")
    if est and "error" not in est:
        print(
            f"memory        weights {est['weights_gib']} GiB + KV cache {est['kv_cache_gib']} GiB "
            f"at {est['context_tokens']} tokens ({est['kv_cache']}) + runtime {est.get('runtime_gib', 0)} GiB "
            f"= {est['total_gib']} GiB "
            f"({_params(est['params'])} params)"
        )
        if not est.get("fits", True):
            print(f"              more than this machine has free with a {round(est.get('margin', 0) * 100)}% margin: try --quantization 4bit, a smaller model, "
                  "or a lower context_tokens")
    if model.get("loaded"):
        extra = f", footprint {model['footprint_gib']} GiB" if "footprint_gib" in model else ""
        print(f"loaded        yes, in {model['load_s']} s on {model['device']}{extra}")
    prompts = report.get("prompts") or {}
    if prompts:
        print(f"prompts       {prompts['detail']}")
        if "api_key" in prompts:
            print(f"api key       {prompts['api_key']}; CA: {prompts['ca_bundle']}")
    server = model.get("server")
    if server:
        caps = [f"context {server['context_window'] or '?'}", "ids in" if server["accepts_ids"] else "text in",
                "ids out" if server["returns_ids"] else "text out",
                "prefix cache" if server["prefix_cache"] else "no prefix cache"]
        if server.get("slots"):
            caps.append(f"{server['slots']} slots")
        print(f"server        {server['dialect']} serving {server['model'] or '?'} ({', '.join(caps)})")
        if server.get("degraded"):
            print(f"              DEGRADED: {server['degraded']}")
    grammars = report["grammars"]
    print(f"grammars      {', '.join(grammars) if grammars else 'none (pip install tree-sitter-python ...)'}")


def workspace_report(root: str, settings) -> dict[str, Any]:
    """Index ``root`` as the server would with no document open, and summarise it."""
    from ..context.workspace import WorkspaceIndex

    root = os.path.realpath(root)
    index = WorkspaceIndex([root], max_files=settings.index_max_files, memory_mb=settings.index_memory_mb,
                           broad_roots=settings.index_broad_roots, watch=False)
    try:
        index.start()
        info = index.summary()
        info.update(root=root, parsed=index.stats["parsed"], from_cache=index.stats["from_cache"],
                    seconds=round(index.stats["seconds"], 2))
    finally:
        index.stop()
    return info


def _print_workspace(info: dict[str, Any]) -> None:
    skipped = ", ".join(f"{why} {n}" for why, n in info["skipped"].items()) or "none"
    stopped = f"; stopped at the {info['stopped_early'].replace('_', ' ')}" if info["stopped_early"] else ""
    print(f"workspace     {info['root']}: {info['files']} files indexed (cap {info['max_files']}, "
          f"~{info['estimated_mb']} of {info['memory_mb']} MB; {info['from_cache']} from the persisted index) "
          f"in {info['seconds']} s; skipped: {skipped}{stopped}")
    for notice in info["notices"]:
        print(f"              {notice}")


def _params(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.1f} M"


def run(args) -> int:
    from ..config import load_settings
    from ..errors import report_cli_error

    cli = {"model": args.model, "quantization": args.quantization, "device": args.device, "dtype": args.dtype,
           "context_tokens": args.context_tokens, **runtime_values(args)}
    settings, errors = load_settings(cli, Path(args.config) if args.config else None)
    for message in errors:
        print(f"codellama-lsp: warning: {message}", file=sys.stderr)
    report, error = collect(settings, load=not args.no_load)
    if args.workspace:
        report["workspace"] = workspace_report(args.workspace, settings)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        _print_text(report)
        if "workspace" in report:
            _print_workspace(report["workspace"])
    sys.stdout.flush()
    if error is not None:
        return report_cli_error(error)
    return 0
