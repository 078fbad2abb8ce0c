"""`codellama-lsp pull MODEL`: download a model into the Hugging Face cache, on a connected machine.

The rest of the program never touches the network (the package sets ``HF_HUB_OFFLINE=1`` before the hub
libraries are imported, and they read it only then). So the download runs in a child process started with
``HF_HUB_OFFLINE=0``. Before starting it, the hub endpoint is probed with a short timeout: without a network,
huggingface_hub would otherwise retry DNS lookups with backoff for minutes before failing.

To prepare an air-gapped machine: run ``pull`` on a connected one, then copy the cache directory
(``~/.cache/huggingface/hub/models--OWNER--NAME``) to the same place on the offline machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from urllib.parse import urlparse

# what a model needs at run time: config, weights (safetensors only), tokenizer files
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "merges.txt", "vocab.txt", "*.md"]
PROBE_TIMEOUT_S = 5.0


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="Hugging Face id, e.g. codellama/CodeLlama-7b-Instruct-hf")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    parser.add_argument("--timeout", type=float, default=PROBE_TIMEOUT_S, help="seconds to wait for the hub to answer")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def probe(url: str, timeout: float) -> str | None:
    """None if a TCP connection to ``url``'s host opens within ``timeout``, else why not. The DNS lookup runs in
    a daemon thread so a resolver that hangs cannot hold the command past ``timeout``."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as exc:
            outcome.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if not outcome:
        return f"no answer within {timeout:g} s"
    return outcome[0]


def _validate(name: str) -> str | None:
    if name.count("/") != 1 or name.startswith((".", "/", "~")) or any(c.isspace() for c in name):
        return f"'{name}' is not a Hugging Face model id (expected OWNER/NAME, e.g. codellama/CodeLlama-7b-Instruct-hf)"
    return None


_CHILD = r"""
import sys
from huggingface_hub import snapshot_download
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
repo, revision, patterns = sys.argv[1], sys.argv[2] or None, sys.argv[3].split(",")
try:
    path = snapshot_download(repo, revision=revision, allow_patterns=patterns)
except GatedRepoError:
    print(f"'{repo}' is gated: accept its licence on the Hugging Face website, then run `hf auth login`", file=sys.stderr)
    sys.exit(3)
except RepositoryNotFoundError:
    print(f"no model '{repo}' on the Hugging Face hub (or it is private: run `hf auth login`)", file=sys.stderr)
    sys.exit(3)
except RevisionNotFoundError:
    print(f"'{repo}' has no revision '{revision}'", file=sys.stderr)
    sys.exit(3)
except Exception as exc:
    print(f"download failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
    sys.exit(3)
print(path)
"""


def run(args) -> int:
    from ..engine.backend import EngineError
    from ..errors import report_cli_error

    problem = _validate(args.model)
    if problem:
        return report_cli_error(EngineError(problem))
    url = endpoint()
    why = probe(url, args.timeout)
    if why is not None:
        return report_cli_error(
            EngineError(
                f"cannot reach {url} ({why}); run `codellama-lsp pull {args.model}` on a machine with internet access, "
                "then copy its ~/.cache/huggingface/hub to this one"
            )
        )
    env = dict(os.environ, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0")
    print(f"downloading {args.model} from {url} into the Hugging Face cache ...", file=sys.stderr)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, args.model, args.revision or "", ",".join(ALLOW_PATTERNS)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    if child.returncode != 0:
        return report_cli_error(EngineError(f"pulling {args.model} failed (see the message above); nothing else was changed"))
    path = child.stdout.strip().splitlines()[-1] if child.stdout.strip() else ""
    print(f"{args.model} is ready at {path}")
    print(f"use it offline with: codellama-lsp complete --model {args.model} FILE:LINE:COL")
    return 0
