"""Faults, on the real server over stdio: each ends in a clear message and a server that keeps answering.

- missing weights and a corrupt ``model.safetensors``: ``codellama/status`` says "error" with a one-line
  reason, requests are answered (empty), and configuring a good model afterwards recovers;
- the model worker thread dying mid-generation, then a (simulated) CUDA out-of-memory on the first try and
  on the retry: the request is answered empty, the log says what happened (restart; retry with a smaller
  prompt), and the next request is served normally.

Faults inside generation are injected with a ``sitecustomize`` in the server process that wraps
``LocalBackend.generate`` — test-only, no hook in the product code.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path

import pytest
from lsprotocol import types as lsp

sys.path.insert(0, str(Path(__file__).parent))
from lsp_client import capabilities, inline, lsp_session, open_document  # noqa: E402

pytestmark = pytest.mark.slow

INJECT = '''
import os
import torch
from codellama_lsp.engine import local

_real = local.LocalBackend.generate
_calls = [0]

def generate(self, prompt_ids, *args, **kwargs):
    _calls[0] += 1
    if _calls[0] == 1:
        raise SystemExit("injected: the worker thread dies")
    if _calls[0] in (2, 3):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
    return _real(self, prompt_ids, *args, **kwargs)

local.LocalBackend.generate = generate
'''

CODE = "import os\n\n\ndef read_config(path):\n    with open(path) as fh:\n        return "
# After the cursor: enough lines that the prompt fills its budget, so the retry's half budget is visibly smaller
LONG_CODE = CODE + "\n\n" + "\n".join(f"SETTING_{i} = read_config('part_{i}.cfg')" for i in range(400)) + "\n"


def broken_models(tiny_model_dir: Path, tmp: Path) -> tuple[Path, Path]:
    missing = tmp / "missing-weights"
    shutil.copytree(tiny_model_dir, missing)
    (missing / "model.safetensors").unlink()
    corrupt = tmp / "corrupt"
    shutil.copytree(tiny_model_dir, corrupt)
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[:8] + b"{not json" + data[17:4096])
    return missing, corrupt


async def test_broken_weights_are_reported_and_the_server_recovers(tiny_model_dir, tmp_path):
    missing, corrupt = broken_models(tiny_model_dir, tmp_path)
    caps = capabilities(configuration=False)
    async with lsp_session(tmp_path / "home", model=missing, caps=caps, init_options={"maxTokens": 4}) as client:
        notes = client.notes
        status = await notes.wait_status(lambda s: s.get("state") in ("ready", "error"))
        assert status["state"] == "error"
        assert "\n" not in status["message"] and len(status["message"]) < 400
        assert re.search(r"weight|safetensors|model\.|missing|no model", status["message"], re.I), status["message"]
        await notes.wait_shown(status["message"][:40])
        uri = (tmp_path / "home" / "workspace" / "cfg.py").as_uri()
        open_document(client, uri, CODE)
        assert not (await asyncio.wait_for(inline(client, uri, 5, 15), 60)).items

        for model, expect in ((corrupt, "error"), (tiny_model_dir, "ready")):
            after = len(notes.statuses)
            client.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
                settings={"codellama": {"model": str(model), "maxTokens": 4}}))
            status = await notes.wait_status(lambda s: s.get("state") in ("ready", "error"), after=after)
            assert status["state"] == expect, status
            if expect == "error":
                assert "\n" not in status["message"]
                assert re.search(r"safetensors|corrupt|header|could not load|invalid", status["message"], re.I), \
                    status["message"]
                assert not (await asyncio.wait_for(inline(client, uri, 5, 15), 60)).items
        # recovered: a real generation runs
        after = len(notes.statuses)
        await asyncio.wait_for(inline(client, uri, 5, 15), 120)
        done = await notes.wait_status(lambda s: "generated_tokens" in s, after=after)
        assert done["state"] == "ready"


async def test_worker_death_and_out_of_memory_are_survived(tiny_model_dir, tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(INJECT)
    monkeypatch.setenv("PYTHONPATH", str(site))
    async with lsp_session(tmp_path / "home", model=tiny_model_dir, init_options={"maxTokens": 4}) as client:
        notes = client.notes
        await notes.wait_ready()
        uri = (tmp_path / "home" / "workspace" / "cfg.py").as_uri()
        open_document(client, uri, LONG_CODE)

        # 1: the worker thread dies -> answered empty, reported, a new thread takes over
        assert not (await asyncio.wait_for(inline(client, uri, 5, 15), 120)).items
        await notes.wait_log("worker thread died")

        # 2: out of memory, and again on the smaller retry -> answered empty, one clear message
        assert not (await asyncio.wait_for(inline(client, uri, 5, 14), 120)).items
        retry = await notes.wait_log("retrying with")
        first, second = map(int, re.findall(r"(\d+) prompt tokens; retrying with (\d+)", retry)[0])
        assert 0 < second < first
        message = await notes.wait_log("generation failed: out of memory")
        assert "context_tokens" in message and "\n" not in message

        # 3: served normally again
        after = len(notes.statuses)
        await asyncio.wait_for(inline(client, uri, 5, 15), 120)
        done = await notes.wait_status(lambda s: "generated_tokens" in s, after=after)
        assert done["state"] == "ready" and done["generated_tokens"] >= 1, done
