"""The suite writes nothing into the user's own directories: conftest.py gives the session XDG cache, config and
state directories of its own (``shared_data.isolate_user_directories``). Before, every test that built a
workspace index without a cache directory, and every server started with the suite's environment, left its
index files in the real ``~/.cache/codellama-lsp/index``."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

import shared_data
from codellama_lsp.context.workspace import WorkspaceIndex, default_cache_dir
from lsp_client import ServerSession, server_env
from shared_data import write


def index_files_for(directory: Path, root: Path) -> list[Path]:
    """The persisted index files in ``directory`` that belong to ``root`` (other sessions may write there too)."""
    found = []
    for path in directory.glob("*.json") if directory.is_dir() else ():
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("root") == os.path.realpath(root):
                found.append(path)
        except (OSError, ValueError):
            continue
    return found


def test_the_user_directories_point_into_the_session_home():
    home = shared_data.ISOLATED_HOME
    assert home is not None and shared_data.REAL_USER_DIRS
    for kind, path in shared_data.user_directories().items():
        assert path.is_relative_to(home), kind
        assert not path.is_relative_to(shared_data.REAL_USER_DIRS[kind].parent), kind
    assert default_cache_dir().is_relative_to(home)


def test_an_index_without_a_cache_directory_persists_into_the_session_home(tmp_path):
    root = tmp_path / f"proj-{uuid.uuid4().hex}"  # a root no earlier run (with the same --basetemp) had
    write(root, "pyproject.toml", "")
    write(root, "app.py", "def main():\n    return 1\n")
    with WorkspaceIndex([root], watch=False):
        pass
    assert index_files_for(default_cache_dir(), root)
    assert index_files_for(shared_data.REAL_USER_DIRS["cache"] / "index", root) == []


@pytest.mark.slow
async def test_a_server_with_the_suites_environment_writes_nothing_under_the_real_user_cache(tiny_model_dir,
                                                                                           tmp_path):
    """``serve`` started with the suite's own environment (not the harness's per-test directories), indexing a
    workspace: its index lands in the session's cache, none of it in the user's."""
    root = tmp_path / f"workspace-{uuid.uuid4().hex}"
    write(root, "pyproject.toml", "")
    write(root, "lib.py", "def helper():\n    return 1\n")
    async with ServerSession(tmp_path / "home", root=root, model=tiny_model_dir, env=server_env(),
                             ready_timeout_s=None) as session:
        await session.notes.wait_status(lambda s: (s.get("index") or {}).get("state") == "ready")
    assert index_files_for(default_cache_dir(), root)  # saved at shutdown, in the session's cache
    assert index_files_for(shared_data.REAL_USER_DIRS["cache"] / "index", root) == []
