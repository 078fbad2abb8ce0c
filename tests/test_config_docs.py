"""Settings facts live once, as field metadata in config.py: the README table, argparse choices, reload keys
and the resident process's key are derived from it and cannot drift apart again."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from codellama_lsp import config, resident
from codellama_lsp.cli import build_parser
from codellama_lsp.config import CHOICES, RELOAD_KEYS, Settings, reload_reasons

REPO = Path(__file__).resolve().parent.parent


def test_the_readme_settings_table_is_the_generated_one():
    done = subprocess.run([sys.executable, str(REPO / "tools" / "settings_table.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert config.settings_table() in readme
    for name in (f.name for f in config.SETTINGS_FIELDS):
        assert f"| `{name}` |" in readme


def _choice_options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for where, dest, choices in _choice_options(sub):
                    yield f"{name} {where}", dest, choices
        elif action.choices is not None and action.dest in CHOICES:
            yield action.dest, action.dest, tuple(action.choices)


def test_command_line_choices_are_the_settings_allowed_values():
    seen = list(_choice_options(build_parser()))
    assert len(seen) >= 10
    for where, dest, offered in seen:
        assert offered == CHOICES[dest], where
    doctor = build_parser().parse_args(["doctor", "--dtype", "float64"])
    assert doctor.dtype == "float64"


@pytest.mark.parametrize("before, after, reloads", [
    ("prompt_lookup", "draft", True),
    ("draft", "none", True),
    ("none", "prompt_lookup", False),
    ("draft", "draft", False),
])
def test_speculation_reloads_only_into_or_out_of_draft(before, after, reloads):
    old, _ = Settings().updated({"speculation": before, "draft_model": "/models/draft"})
    new, _ = old.updated({"speculation": after})
    assert (reload_reasons(old, new) == ["speculation"]) is reloads
    assert (resident.key_of(old) != resident.key_of(new)) is reloads


def test_every_model_setting_reloads_and_others_do_not():
    base = Settings()
    assert {"model", "device", "dtype", "quantization", "draft_model", "kv_cache", "backend", "speculation"} <= set(RELOAD_KEYS)
    changed, errors = base.updated({"maxTokens": 7, "temperature": 0.5, "logLevel": "debug", "alternatives": 1})
    assert not errors and reload_reasons(base, changed) == []
    assert resident.key_of(base) == resident.key_of(changed)
    for key, value in (("model", "/m"), ("remote_model", "x"), ("n_threads", 3), ("dtype", "float64")):
        other, errors = base.updated({key: value})
        assert not errors and key in reload_reasons(base, other)
        assert resident.key_of(base) != resident.key_of(other)


def test_context_tokens_reloads_only_when_the_loaded_model_cannot_hold_it():
    """llama.cpp sizes its context at load: the loaded backend says whether new settings fit (``holds``);
    other settings never ask it, and with nothing loaded a change to it always reloads."""
    base, _ = Settings().updated({"context_tokens": 2048})
    raised, _ = base.updated({"context_tokens": 8192})
    lowered, _ = base.updated({"context_tokens": 1024})
    asked: list[int] = []

    def holds_up_to(n: int):
        return lambda s: asked.append(s.context_tokens) or s.context_tokens <= n

    assert reload_reasons(base, raised, holds_up_to(2048)) == ["context_tokens"]
    assert reload_reasons(base, lowered, holds_up_to(2048)) == []
    assert reload_reasons(base, raised, holds_up_to(16384)) == []
    assert reload_reasons(base, lowered, None) == ["context_tokens"]  # a load under way or failed: load for it
    assert asked == [8192, 1024, 8192]
    other, _ = base.updated({"max_tokens": 7})
    assert reload_reasons(base, other, holds_up_to(0)) == [] and asked == [8192, 1024, 8192]
