"""The workspace index under any tree: what is indexed (git, walk, broad roots), the caps, background
indexing that yields to requests, the persisted index, and the watcher's fallback when inotify refuses."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import threading
from pathlib import Path

import psutil
import pytest
from lsprotocol import types as lsp

from codellama_lsp.context import scope
from codellama_lsp.context.retrieval import Retriever
from codellama_lsp.context.workspace import WorkspaceIndex

from lsp_client import lsp_session, open_document
from shared_data import write


def home_like_tree(base: Path, dirs: int = 30, per_dir: int = 40) -> Path:
    """A $HOME-like tree outside any repository: no project markers at the top, nested folders of sources
    and other files, one project inside."""
    home = base / "home"
    for d in range(dirs):
        for f in range(per_dir):
            sub = f"area{d % 5}/dir{d}/sub{f % 3}"
            if f % 4 == 0:
                write(home, f"{sub}/notes{f}.txt", "plain text\n")
            else:
                write(home, f"{sub}/mod{f}.py", f"def func_{d}_{f}(x):\n    return x + {f}\n")
    project = home / "code" / "proj"
    write(project, "pyproject.toml", "[project]\nname = 'proj'\n")
    write(project, "proj/core.py", "def core_helper():\n    return 1\n")
    write(project, "proj/app.py", "from .core import core_helper\n\ncore_helper()\n")
    return home


def test_scope_decides_broad_roots(tmp_path, monkeypatch):
    home = home_like_tree(tmp_path, dirs=2, per_dir=4)
    monkeypatch.setenv("HOME", str(home))
    assert scope.broad_reason("/") == "the file-system root"
    assert scope.broad_reason(str(home)) == "the home directory"
    assert "without project markers" in scope.broad_reason(str(home / "area0"))
    assert scope.broad_reason(str(home / "code" / "proj")) is None
    app = home / "code/proj/proj/app.py"
    assert scope.focus_roots(str(home), [str(app)]) == [str(home / "code" / "proj")]
    loose = home / "area0/dir0/sub1/mod1.py"
    assert scope.focus_roots(str(home), [str(loose), str(app)]) == sorted(
        [str(loose.parent), str(home / "code" / "proj")], key=len)


def test_root_slash_indexes_only_around_open_documents(tmp_path, monkeypatch):
    home = home_like_tree(tmp_path)
    monkeypatch.setenv("HOME", str(home))
    app = home / "code/proj/proj/app.py"
    index = WorkspaceIndex(["/"], tmp_path / "cache", broad_roots=False, focus=[app], watch=False)
    index.start_background()
    assert index.wait_ready(300)
    info = index.summary()
    assert info["scope"] == [str(home / "code" / "proj")]
    assert sorted(Path(p).name for p in index.files() if p.endswith(".py")) == ["app.py", "core.py"]
    assert all(p.startswith(str(home / "code" / "proj")) for p in index.files())
    assert len(info["notices"]) == 1 and "index_broad_roots" in info["notices"][0]
    assert "file-system root" in info["notices"][0]
    index.stop()


def test_home_root_without_open_documents_indexes_nothing_and_settles(tmp_path, monkeypatch):
    home = home_like_tree(tmp_path)
    monkeypatch.setenv("HOME", str(home))
    index = WorkspaceIndex([home], tmp_path / "cache", broad_roots=False)
    index.start_background()
    assert index.wait_ready(300)
    assert index.files() == [] and index.summary()["scope"] == []
    assert index._worker is None
    # opening a document widens the scope to its folder, in the background
    loose = home / "area1/dir1/sub0/mod3.py"
    index.focus_on(loose)
    assert index.wait_ready(300)
    assert index.summary()["scope"] == [str(loose.parent)]
    assert {Path(p).parent for p in index.files()} == {loose.parent}
    index.stop()


def test_caps_hold_nearest_first_and_work_stops(tmp_path):
    """The $HOME-like acceptance case scaled down: index it whole (index_broad_roots) with a 100-file cap."""
    home = home_like_tree(tmp_path, dirs=40, per_dir=40)
    focus = home / "area2/dir7/sub1/mod1.py"
    index = WorkspaceIndex([home], tmp_path / "cache", max_files=100, focus=[focus], watch=False)
    rss_before = psutil.Process().memory_info().rss
    index.start_background()
    assert index.wait_ready(300)
    info = index.summary()
    assert info["files"] == 100 and index.stats["parsed"] == 100  # nothing parsed beyond the cap
    assert info["stopped_early"] == "file_cap" and info["skipped"]["file_cap"] >= 1
    # nearest first: every file of the open document's folder made it in
    siblings = {str(p) for p in focus.parent.iterdir() if p.suffix == ".py"}
    assert siblings <= set(index.files())
    assert index._worker is None  # CPU settles: no thread left working
    assert psutil.Process().memory_info().rss - rss_before < 200 * 2**20
    index.stop()


def test_memory_budget_stops_indexing(tmp_path):
    home = home_like_tree(tmp_path, dirs=10, per_dir=20)
    index = WorkspaceIndex([home], tmp_path / "cache", memory_mb=0.05, watch=False).start()
    info = index.summary()
    assert 0 < info["files"] < 150 and info["stopped_early"] == "memory_budget"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_repository_uses_ls_files_and_counts_skips(tmp_path):
    repo = tmp_path / "repo"
    write(repo, ".gitignore", "ignored/\n")
    write(repo, "src/a.py", "def a():\n    pass\n")
    write(repo, "src/deep/b.py", "def b():\n    pass\n")
    write(repo, "ignored/c.py", "def c():\n    pass\n")
    write(repo, "untracked.py", "def u():\n    pass\n")
    write(repo, "far/z/zz.py", "def z():\n    pass\n")
    write(repo, "README.md", "# hi\n")
    (repo / "blob.py").write_bytes(b"\x00\x01binary")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "add", "src", "far", ".gitignore", "README.md", "blob.py"], check=True,
                   env=env)
    listed = scope.git_files(str(repo))
    assert str(repo / "untracked.py") in listed and str(repo / "ignored/c.py") not in listed
    index = WorkspaceIndex([repo], tmp_path / "cache", max_files=3, focus=[repo / "src/deep/b.py"], watch=False)
    index.start()
    names = sorted(Path(p).name for p in index.files())
    assert names == ["a.py", "b.py", "untracked.py"]  # nearest to src/deep first; the cap leaves far/z out
    skipped = index.summary()["skipped"]
    assert skipped["file_cap"] == 1 and skipped["binary"] == 1 and skipped["not_source"] >= 2


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_what_open_documents_import_goes_first_however_far(tmp_path):
    repo = tmp_path / "mono"
    for i in range(6):
        write(repo, f"team{i}/svc/near{i}.py", f"def near_{i}():\n    pass\n")
    write(repo, "platform/deep/lib/clock.py", "def now():\n    pass\n")
    write(repo, "web/ui/util.ts", "export function fmt() {}\n")
    app = write(repo, "team0/svc/app.py", "from platform.deep.lib.clock import now\n\nnow()\n")
    page = write(repo, "web/ui/page.ts", "import { fmt } from './util';\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    index = WorkspaceIndex([repo], tmp_path / "cache", max_files=4, focus=[app, page], watch=False).start()
    names = {Path(p).name for p in index.files()}
    assert {"clock.py", "util.ts", "app.py", "page.ts"} == names


def test_background_indexing_waits_for_requests(tmp_path):
    home = home_like_tree(tmp_path, dirs=4, per_dir=8)
    index = WorkspaceIndex([home], tmp_path / "cache", watch=False)
    retriever = Retriever(index)  # fed by the index's notifications as it fills
    with index.busy():
        index.start_background()
        assert index.paused.wait(300)
        assert index.files() == []  # nothing was indexed while the request held it
    assert index.wait_ready(300)
    assert index.count() == len(list(home.rglob("*.py"))) + 1  # and pyproject.toml
    assert len(retriever._bm25.paths()) == index.count()
    index.stop()


def test_persisted_index_is_reused_by_a_background_start(tmp_path):
    home = home_like_tree(tmp_path, dirs=3, per_dir=8)
    first = WorkspaceIndex([home], tmp_path / "cache", watch=False).start_background()
    assert first.wait_ready(300)
    first.stop()
    second = WorkspaceIndex([home], tmp_path / "cache", watch=False).start_background()
    assert second.wait_ready(300)
    assert second.stats["parsed"] == 0 and second.stats["from_cache"] == first.count() > 0
    second.stop()


def test_doctor_reports_indexed_and_skipped(tmp_path, capsys, monkeypatch):
    import json

    from codellama_lsp.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    home = home_like_tree(tmp_path, dirs=3, per_dir=8)
    config = write(tmp_path, "config.toml", "index_max_files = 10\nindex_broad_roots = true\n")
    code = main(["doctor", "--json", "--no-load", "--model", "demo", "--config", str(config), "--workspace", str(home)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    info = report["workspace"]
    assert info["files"] == 10 and info["stopped_early"] == "file_cap" and info["skipped"]["not_source"] > 0
    monkeypatch.setenv("HOME", str(home))
    main(["doctor", "--no-load", "--model", "demo", "--config", "/nonexistent.toml", "--workspace", str(home)])
    out = capsys.readouterr().out
    assert f"workspace     {home}: 0 files indexed" in out and "index_broad_roots = true" in out


class _RefusingObserver:
    """watchdog's Observer as it behaves when inotify's max_user_watches is reached."""

    def __init__(self, *args, **kwargs) -> None:
        self.daemon = True

    def schedule(self, *args, **kwargs) -> None:
        pass

    def start(self) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    def stop(self) -> None:
        pass


def test_watch_limit_falls_back_to_open_and_save(tmp_path, monkeypatch):
    import watchdog.observers

    monkeypatch.setattr(watchdog.observers, "Observer", _RefusingObserver)
    repo = tmp_path / "repo"
    write(repo, "pyproject.toml", "")
    module = write(repo, "pkg/mod.py", "def before():\n    pass\n")
    index = WorkspaceIndex([repo], tmp_path / "cache").start()
    assert index.watching is False
    notices = index.summary()["notices"]
    assert len(notices) == 1 and "max_user_watches" in notices[0] and "saved" in notices[0]
    changed = threading.Event()
    index.add_listener(lambda paths: changed.set())
    module.write_text("def after():\n    pass\n", encoding="utf-8")
    index.saved(module)  # what the server does on textDocument/didSave
    assert changed.is_set() and len(index.definitions("after")) == 1 and index.definitions("before") == []
    fresh = write(repo, "pkg/new.py", "def opened():\n    pass\n")
    index.focus_on(fresh)  # textDocument/didOpen
    assert len(index.definitions("opened")) == 1
    index.stop()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_server_with_root_slash_indexes_the_open_documents_project(tiny_model_dir, tmp_path):
    """A new user's session with ``rootUri`` = ``file:///``: the status says what is indexed, the user is told
    once how to widen it, and the caps from the settings hold."""
    project = tmp_path / "proj"
    write(project, "pyproject.toml", "")
    for i in range(12):
        write(project, f"pkg/m{i}.py", f"def f{i}():\n    return {i}\n")
    app = write(project, "pkg/app.py", "from .m1 import f1\n\nf1()\n")
    async with lsp_session(tmp_path / "home", model=tiny_model_dir, root=Path("/"),
                           init_options={"indexMaxFiles": 5}) as client:
        open_document(client, app.as_uri(), app.read_text(), "python")
        status = await client.notes.wait_status(
            lambda s: (s.get("index") or {}).get("state") == "ready" and s["index"]["files"] == 5, timeout=300)
        info = status["index"]
        assert info["scope"] == [str(project)]
        assert info["stopped_early"] == "file_cap"  # 13 sources, 5 indexed: the walk stopped there
        shown = await client.notes.wait_shown("file-system root", timeout=300)
        assert "index_broad_roots" in shown
        save = lsp.DidSaveTextDocumentParams(text_document=lsp.TextDocumentIdentifier(uri=app.as_uri()))
        client.text_document_did_save(save)
        await client.notes.wait_ready()  # leave only once the model is loaded (a shutdown mid-load can hang)
    assert sum("file-system root" in m for m in client.notes.shown) == 1


def test_snippet_selection_stays_stable_while_the_index_fills(tmp_path):
    """Files the background indexer adds must not reset the prompt order (the prompt prefix and its KV cache
    stay while the user types in one scope); an edit to an indexed file does."""
    root = tmp_path / "loose"  # no project markers: indexed around open files, growing as files open
    write(root, "a/util.py", "def parse_record(line):\n    return line.split(',')\n")
    app = write(root, "a/app.py", "from util import parse_record\n\n\ndef run(rows):\n    for row in rows:\n"
                                  "        parse_record(row)\n")
    for i in range(20):
        write(root, f"b/mod{i}.py", f"def record_{i}(line):\n    return line.split(',')[{i}]\n")
    index = WorkspaceIndex([root], tmp_path / "cache", broad_roots=False, focus=[app], watch=False)
    retriever = Retriever(index)
    index.start_background()
    assert index.wait_ready(300)
    text = app.read_text()
    offset = len(text)

    def order() -> list[tuple[str, int]]:
        snippets = retriever.snippets(str(app), text, offset, budget_tokens=400, count_tokens=lambda t: len(t.split()))
        return [(s.path, s.start_line) for s in snippets]

    first = order()
    generation, edits = index.generation, index.edits
    index.focus_on(root / "b" / "mod3.py")  # another folder opened: its 20 files arrive in the background
    assert index.wait_ready(300) and index.generation > generation and index.edits == edits
    second = order()
    kept = [key for key in second if key in first]
    assert kept == [key for key in first if key in second] and second[:len(kept)] == kept
    assert retriever._last[0][2] == edits


def test_watcher_ignores_the_index_reading_files(tmp_path):
    """Reading files (the index, the retriever, directory listings) sends the watcher nothing: unfiltered,
    inotify reports every open and close, and on a big tree that flooded its queue; watchdog then re-walked the
    whole tree on each overflow and the CPU never settled (``index_broad_roots`` on a 200,000-file tree)."""
    home = home_like_tree(tmp_path, dirs=8, per_dir=10)
    index = WorkspaceIndex([home], tmp_path / "cache", focus=[home / "code/proj/proj/app.py"])
    retriever = Retriever(index)
    index.start_background()
    assert index.wait_ready(300) and index.watching
    before = index.stats["watch_events"]
    for path in index.files():
        Path(path).read_bytes()
    for _ in os.walk(home):
        pass
    retriever.warm()
    seen = threading.Event()
    target = home / "area0/dir0/sub1/mod1.py"
    index.add_listener(lambda paths: seen.set() if str(target) in paths else None)
    target.write_text("def changed():\n    return 2\n", encoding="utf-8")
    assert seen.wait(60)  # a real change is seen; events come in order, so any from the reads came before it
    assert len(index.definitions("changed")) == 1
    assert 0 < index.stats["watch_events"] - before <= 6  # the write's own (modified, closed), nothing else
    index.stop()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_server_on_a_broad_root_settles_after_the_capped_set(tiny_model_dir, tmp_path):
    """``index_broad_roots`` on a tree bigger than the cap: once the status says the index is ready, the server
    process uses (almost) no CPU: no indexing, rescanning or watching work is left."""
    home = home_like_tree(tmp_path, dirs=40, per_dir=30)
    app = home / "code/proj/proj/app.py"
    async with lsp_session(tmp_path / "session", model=tiny_model_dir, root=home,
                           init_options={"indexMaxFiles": 300, "indexBroadRoots": True}) as client:
        await client.notes.wait_ready()
        open_document(client, app.as_uri(), app.read_text(), "python")
        status = await client.notes.wait_status(
            lambda s: (s.get("index") or {}).get("state") == "ready" and s["index"]["files"] == 300, timeout=300)
        assert status["index"]["stopped_early"] == "file_cap" and status["index"]["watching"]
        server = psutil.Process(client._server.pid)
        before = server.cpu_times()
        await asyncio.sleep(3.0)  # the measuring window (nothing waits on it)
        after = server.cpu_times()
        used = (after.user + after.system) - (before.user + before.system)
        assert used < 0.5, f"{used:.2f} s of CPU in 3 s after the index was ready"


def _index_with_retriever(root: Path, cache: Path) -> tuple[WorkspaceIndex, Retriever]:
    index = WorkspaceIndex([root], cache, watch=False)
    retriever = Retriever(index)
    index.start_background()
    assert index.wait_ready(300)
    return index, retriever


def _top_windows(retriever: Retriever, text: str) -> list:
    from codellama_lsp.context.retrieval import split_terms

    return [(round(score, 6), w) for score, w in retriever._bm25.search(split_terms(text), k=10)]


def test_restart_rereads_only_changed_files_and_the_rest_comes_from_the_store(tmp_path):
    home = home_like_tree(tmp_path, dirs=6, per_dir=12)
    first, retriever = _index_with_retriever(home, tmp_path / "cache")
    assert retriever.stats["read"] == first.count() and retriever.stats["from_store"] == 0
    first.stop()
    assert first.bm25_store_path().is_file()
    changed = home / "area1/dir1/sub2/mod2.py"
    changed.write_text("def func_1_2(x):\n    return x + zebra_quantum_marker\n", encoding="utf-8")
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    second, restarted = _index_with_retriever(home, tmp_path / "cache")
    assert restarted.stats == {"read": 1, "from_store": second.count() - 1}
    assert _top_windows(restarted, "zebra_quantum_marker")[0][1].path == str(changed)
    # the same windows and scores as a cold build over the same files
    cold, built = _index_with_retriever(home, tmp_path / "cold-cache")
    for query in ("func_3_5 return", "zebra_quantum_marker", "core_helper", "func_0 x"):
        assert _top_windows(restarted, query) == _top_windows(built, query)
    second.stop()
    cold.stop()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_a_damaged_store_falls_back_to_reading_the_files(tmp_path, caplog, damage):
    home = home_like_tree(tmp_path, dirs=3, per_dir=8)
    first, _ = _index_with_retriever(home, tmp_path / "cache")
    first.stop()
    store = first.bm25_store_path()
    data = store.read_bytes()
    if damage == "truncate":
        store.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        store.write_bytes(os.urandom(len(data)))
    else:
        store.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    with caplog.at_level("WARNING", logger="codellama_lsp.context.retrieval"):
        second, retriever = _index_with_retriever(home, tmp_path / "cache")
    lines = [r for r in caplog.records if "BM25 store" in r.getMessage()]
    assert len(lines) == 1 and "re-reading" in lines[0].getMessage()
    assert retriever.stats == {"read": second.count(), "from_store": 0}
    assert _top_windows(retriever, "func_2_5")[0][1].path.endswith("dir2/sub2/mod5.py")
    second.stop()  # and a good store is written again
    third, again = _index_with_retriever(home, tmp_path / "cache")
    assert again.stats["from_store"] == third.count()
    third.stop()


def test_the_store_is_bounded_on_disk(tmp_path, caplog):
    home = home_like_tree(tmp_path, dirs=3, per_dir=8)
    first, retriever = _index_with_retriever(home, tmp_path / "cache")
    assert retriever.store_limit_bytes >= 64 * 2**20  # the index's memory budget, at least 64 MB
    first.stop()
    store = first.bm25_store_path()
    size = store.stat().st_size
    assert 0 < size < 64 * 2**20
    index = WorkspaceIndex([home], tmp_path / "cache", watch=False)
    retriever = Retriever(index)
    retriever.store_limit_bytes = size - 1
    (home / "code/proj/proj/core.py").write_text("def core_helper():\n    return 2\n", encoding="utf-8")
    with caplog.at_level("INFO", logger="codellama_lsp.context.retrieval"):
        index.start_background()
        assert index.wait_ready(300)
    assert retriever.stats["read"] == 1
    assert not store.exists()  # too big for the limit: not written, and the stale one is gone
    assert sum("not written" in r.getMessage() for r in caplog.records) == 1
    index.stop()


def test_a_full_cap_makes_room_for_a_newly_opened_far_away_folder(tmp_path):
    repo = tmp_path / "mono"
    write(repo, "pyproject.toml", "[project]\nname = 'mono'\n")
    for team in range(6):
        for i in range(8):
            write(repo, f"team{team}/svc/m{i}.py", f"def team{team}_m{i}():\n    return {i}\n")
    near = repo / "team0/svc/m0.py"
    write(repo, "far/away/lib/clock.py", "def now():\n    return 0\n")
    far = write(repo, "far/away/app/main.py", "from ..lib.clock import now\n\nnow()\n")
    write(repo, "far/away/app/helpers.py", "def helper():\n    return 1\n")
    index = WorkspaceIndex([repo], tmp_path / "cache", max_files=20, focus=[near], watch=False)
    retriever = Retriever(index)
    index.start_background()
    assert index.wait_ready(300)
    assert index.count() == 20 and str(far) not in index.files()
    before = set(index.files())
    index.focus_on(far)  # the editor opens a file the capped walk never reached
    assert index.wait_ready(300)
    files = set(index.files())
    assert index.count() == 20  # the cap still holds...
    assert {str(far), str(far.parent / "helpers.py"), str(repo / "far/away/lib/clock.py")} <= files  # ...and it is in
    assert {str(p) for p in near.parent.glob("*.py")} <= files  # the first document's folder stayed
    evicted = before - files
    assert len(evicted) == 3 and index.stats["evicted"] == 3
    assert all("/team0/" not in p for p in evicted)  # the farthest from both documents went
    assert set(retriever._bm25.paths()) == files and len(index.definitions("now")) == 1
    index.focus_on(far)  # opening it again changes nothing
    assert index.wait_ready(300) and set(index.files()) == files
    index.stop()


def test_opening_documents_below_the_caps_starts_no_work(tmp_path):
    repo = tmp_path / "small"
    write(repo, "pyproject.toml", "")
    docs = [write(repo, f"pkg{i}/m.py", f"def f{i}():\n    return {i}\n") for i in range(3)]
    index = WorkspaceIndex([repo], tmp_path / "cache", watch=False)
    index.start_background()
    assert index.wait_ready(300)
    states = []
    index.on_state = lambda: states.append(index.state)
    for doc in docs:
        index.focus_on(doc)
    assert states == [] and index._worker is None  # everything is indexed already: no job, no state change


def test_background_indexing_stays_off_while_requests_keep_coming(tmp_path, monkeypatch):
    """After a request the indexer waits a quiet period (a user typing sends one per keystroke), and a stop
    still ends the wait at once."""
    from codellama_lsp.context import workspace

    monkeypatch.setattr(workspace, "QUIET_AFTER_REQUEST_S", 600.0)
    monkeypatch.setattr(workspace, "MAX_PAUSE_S", 900.0)
    home = home_like_tree(tmp_path, dirs=2, per_dir=4)
    index = WorkspaceIndex([home], tmp_path / "cache", watch=False)
    with index.busy():
        index.start_background()
        assert index.paused.wait(300)
    assert index.files() == [] and index.state == "indexing"  # the request is over, the quiet period is not
    worker = index._worker
    index.stop()
    assert not worker.is_alive()


def test_wait_ready_waits_while_the_last_worker_saves_the_store(tmp_path, monkeypatch):
    """A worker that has emptied its queue still saves the store before it says "ready": waiting in that window
    must wait for the save, not answer "not ready" at once (a race the full suite once hit)."""
    root = tmp_path / "proj"
    write(root, "pyproject.toml", "[project]\nname = 'proj'\n")
    write(root, "app.py", "def main():\n    return 1\n")
    index = WorkspaceIndex([root], tmp_path / "cache", watch=False)
    saving, release = threading.Event(), threading.Event()
    save = index._save_cache

    def slow_save(*args, **kwargs):
        if kwargs.get("complete"):
            saving.set()
            release.wait(60)
        return save(*args, **kwargs)

    monkeypatch.setattr(index, "_save_cache", slow_save)
    index.start_background()
    assert saving.wait(60) and index.state == "indexing"  # the worker left its loop and is saving
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(index.wait_ready(60)))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and answers == []  # still waiting for the save
    release.set()
    waiter.join(60)
    assert answers == [True]
    index.stop()


def test_work_queued_while_the_worker_saves_is_its_own_and_ready_comes_after_it(tmp_path, monkeypatch):
    """One indexing thread at a time: a document opened while the worker saves the store queues work that the
    same worker takes after the save (no second thread indexing beside it, no "ready" while work is left)."""
    home = home_like_tree(tmp_path, dirs=2, per_dir=4)
    monkeypatch.setenv("HOME", str(home))
    index = WorkspaceIndex([home], tmp_path / "cache", broad_roots=False, watch=False)
    saving, release = threading.Event(), threading.Event()
    save = index._save_cache

    def slow_save(*args, **kwargs):
        if kwargs.get("complete") and not release.is_set():
            saving.set()
            release.wait(60)
        return save(*args, **kwargs)

    monkeypatch.setattr(index, "_save_cache", slow_save)
    states: list[str] = []
    index.on_state = lambda: states.append(index.state)
    index.start_background()
    assert saving.wait(60) and index.files() == []  # nothing in scope yet: the worker went straight to saving
    loose = home / "area0/dir0/sub1/mod1.py"
    index.focus_on(loose)  # widens the scope: queues a job while the worker is still saving
    assert [t.name for t in threading.enumerate()].count("codellama-index") == 1
    assert not index.wait_ready(0)
    release.set()
    assert index.wait_ready(60)
    assert {Path(p).parent for p in index.files()} == {loose.parent}  # the queued job was done before "ready"
    assert states[-1] == "ready" and "ready" not in states[:-1]
    index.stop()
