"""Every way loading an explicitly named model can fail ends in one actionable line and exit status 2.

Each case runs the real command line (``codellama-lsp doctor --model X`` and ``complete --model X``) as a
subprocess, on real broken checkpoints built from the tiny test model: missing weights, a bad path, a
truncated and a garbage safetensors file, an unknown and a non-causal architecture, a checkpoint too large
for memory (its config claims a 2^41-token vocabulary: the allocation fails at once, whatever the
machine's overcommit policy, since it exceeds the address space), a broken bitsandbytes, and a Hub id that
is not in the local cache. The subprocesses run a few at a time: most of each one's time is importing torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared_data import REPO

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _model_dir(base: Path, name: str, src: Path, *, weights: bytes | None = None, config: dict | None = None) -> Path:
    dest = base / name
    dest.mkdir()
    for f in TOKENIZER_FILES:
        shutil.copy(src / f, dest / f)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(config or {})
    (dest / "config.json").write_text(json.dumps(cfg))
    if weights is not None:
        (dest / "model.safetensors").write_bytes(weights)
    return dest


@pytest.fixture(scope="module")
def broken(tiny_model_dir, tmp_path_factory):
    """name -> (argv after the subcommand, expected message fragments)."""
    from safetensors.torch import load_file, save_file

    base = tmp_path_factory.mktemp("broken")
    good = (tiny_model_dir / "model.safetensors").read_bytes()
    no_embeddings = base / "no-embeddings.safetensors"
    tensors = {k: v for k, v in load_file(tiny_model_dir / "model.safetensors").items()
               if "embed" not in k and "lm_head" not in k}
    save_file(tensors, no_embeddings, metadata={"format": "pt"})
    fake_bnb = base / "fake-site" / "bitsandbytes"
    fake_bnb.mkdir(parents=True)
    (fake_bnb / "__init__.py").write_text("raise ImportError('libbitsandbytes_cpu.so: cannot open shared object file')\n")
    not_a_model = base / "not-a-model"
    not_a_model.mkdir()
    return {
        "bad path": ([str(base / "does-not-exist")], ["does not exist", "--model"]),
        "not a model directory": ([str(not_a_model)], ["no config.json"]),
        "missing weights": ([str(_model_dir(base, "no-weights", tiny_model_dir))], ["no model weights", "re-download"]),
        "truncated checkpoint": ([str(_model_dir(base, "truncated", tiny_model_dir, weights=good[: len(good) // 3]))],
                                 ["corrupt checkpoint", "re-download"]),
        "garbage checkpoint": ([str(_model_dir(base, "garbage", tiny_model_dir, weights=os.urandom(4096)))],
                               ["corrupt checkpoint"]),
        "unknown architecture": ([str(_model_dir(base, "unknown-arch", tiny_model_dir, weights=good,
                                                 config={"model_type": "frobnicator"}))],
                                 ["unsupported architecture 'frobnicator'", "Code Llama-family"]),
        "not a causal LM": ([str(_model_dir(base, "t5", tiny_model_dir, weights=good, config={"model_type": "t5"}))],
                            ["unsupported architecture 't5'", "not a text-generating"]),
        "out of memory": ([str(_model_dir(base, "huge", tiny_model_dir, weights=no_embeddings.read_bytes(),
                                          config={"vocab_size": 2**41}))],
                          ["out of memory", "--quantization 4bit"]),
        "bitsandbytes unusable": ([str(tiny_model_dir), "--quantization", "4bit", "--env-pythonpath", str(fake_bnb.parent)],
                                  ["bitsandbytes", "--quantization none"]),
        "not in the local cache": (["someone/NotCached-7b"], ["not in the local Hugging Face cache",
                                                              "codellama-lsp pull someone/NotCached-7b"]),
    }


def _run_all(commands: dict[str, list[str]], tmp_path: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run the commands a few at a time (each mostly imports torch; more at once only thrashes the CPUs)."""
    from concurrent.futures import ThreadPoolExecutor

    base_env = {k: v for k, v in os.environ.items() if k != "CODELLAMA_LSP_MODEL"}
    base_env.update(HF_HUB_CACHE=str(tmp_path / "empty-hub"), XDG_CONFIG_HOME=str(tmp_path / "config"),
                    HF_HUB_OFFLINE="1")

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        env = dict(base_env)
        pythonpath = [str(REPO)]
        if "--env-pythonpath" in argv:
            i = argv.index("--env-pythonpath")
            pythonpath.insert(0, argv[i + 1])
            argv = argv[:i] + argv[i + 2 :]
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
        return subprocess.run([sys.executable, "-m", "codellama_lsp.cli", *argv], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=280)

    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) + 1) as pool:
        futures = {name: pool.submit(run, argv) for name, argv in commands.items()}
        return {name: future.result() for name, future in futures.items()}


def _check(name: str, proc: subprocess.CompletedProcess, expected: list[str]) -> None:
    assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr + proc.stdout, f"{name}: traceback\n{proc.stderr[-3000:]}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    last = lines[-1]
    assert last.startswith("codellama-lsp: error: "), f"{name}: {last}"
    for fragment in expected:
        assert fragment in last, f"{name}: {fragment!r} not in {last!r}"


def test_every_load_failure_is_one_actionable_line(broken, tmp_path):
    commands = {name: ["doctor", "--model", *argv] for name, (argv, _) in broken.items()}
    # the same messages through `complete`, which shares the loading path
    target = tmp_path / "main.py"
    target.write_text("def f():\n    return 1\n")
    complete_cases = ("out of memory",)
    have_complete = (REPO / "codellama_lsp" / "completion.py").is_file()
    if have_complete:
        for name in complete_cases:
            argv = broken[name][0]
            commands[f"complete: {name}"] = ["complete", "--model", *argv, f"{target}:1:1"]
    results = _run_all(commands, tmp_path)
    for name, (_, expected) in broken.items():
        _check(name, results[name], expected)
    if have_complete:
        for name in complete_cases:
            _check(f"complete: {name}", results[f"complete: {name}"], broken[name][1])


def test_pull_without_network_fails_fast_with_a_clear_message(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_ENDPOINT="https://hub.invalid")
    proc = subprocess.run([sys.executable, "-m", "codellama_lsp.cli", "pull", "codellama/CodeLlama-7b-hf", "--timeout", "3"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("codellama-lsp: error: cannot reach https://hub.invalid")
    assert "on a machine with internet access" in last
    bad = subprocess.run([sys.executable, "-m", "codellama_lsp.cli", "pull", "./local/dir"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a Hugging Face model id" in bad.stderr
