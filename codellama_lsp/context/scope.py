"""Which directories of a workspace root are worth indexing, and in what order files are taken.

Editors often start a language server with a root that is no project: Neovim and Emacs fall back to the current
directory (often ``$HOME``), a lone file opened from ``/etc`` gives ``/``. Indexing such a root whole means hours
of CPU and gigabytes of memory for context nobody asked for, so a *broad* root (the file-system root, the home
directory, or a directory without any project marker) is indexed only around the open documents: each one's
project root (the nearest directory above it with a marker, never a broad one) or else its own directory.

Inside a git repository the candidate files are what ``git ls-files`` lists (tracked plus untracked, honouring
``.gitignore``; one fast call, no tree walk). Candidates are ordered nearest-to-the-open-documents first (tree
distance, then depth), so that a file-count cap keeps what retrieval would pick anyway.
"""

from __future__ import annotations

import os
import subprocess
from typing import Iterable, Sequence

# A directory holding one of these is a project root.
PROJECT_MARKERS = (
    ".git", ".hg", ".svn", ".jj", "pyproject.toml", "setup.py", "setup.cfg", "requirements.txt", "package.json",
    "deno.json", "tsconfig.json", "Cargo.toml", "go.mod", "go.work", "pom.xml", "build.gradle", "build.gradle.kts",
    "settings.gradle", "CMakeLists.txt", "Makefile", "meson.build", "configure.ac", "composer.json", "Gemfile",
    "mix.exs", "Package.swift", "WORKSPACE", "MODULE.bazel", "BUILD.bazel", "pubspec.yaml", "stack.yaml",
    "dune-project", "build.sbt", "project.clj", "Pipfile", "environment.yml", ".project", ".projectile",
)
_MARKER_SUFFIXES = (".sln", ".csproj", ".fsproj", ".xcodeproj", ".cabal", ".nimble", ".gemspec")

GIT_TIMEOUT_S = 30.0


def has_project_marker(directory: str) -> bool:
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    present = set(names)
    if any(m in present for m in PROJECT_MARKERS):
        return True
    return any(n.endswith(_MARKER_SUFFIXES) for n in names)


def home_directory() -> str:
    return os.path.realpath(os.path.expanduser("~"))


def broad_reason(root: str) -> str | None:
    """Why ``root`` is not a project to index whole ("the file-system root", …), or None when it is one."""
    real = os.path.realpath(root)
    if real == os.path.dirname(real):
        return "the file-system root"
    if real == home_directory():
        return "the home directory"
    if not has_project_marker(real):
        return "a directory without project markers (.git, pyproject.toml, package.json, go.mod, …)"
    return None


def project_root_of(path: str, boundary: str | None = None) -> str | None:
    """The nearest directory at or above ``path``'s directory that has a project marker and is not broad
    (not ``/``, not the home directory), stopping at ``boundary``'s parent; None when there is none."""
    directory = os.path.dirname(os.path.realpath(path))
    home = home_directory()
    stop = os.path.dirname(boundary) if boundary else None
    while True:
        if directory == os.path.dirname(directory) or directory == home or directory == stop:
            return None
        if has_project_marker(directory):
            return directory
        directory = os.path.dirname(directory)


def focus_roots(root: str, documents: Iterable[str]) -> list[str]:
    """The directories to index inside a broad ``root`` for these open documents (no duplicates, none nested
    in another; never ``/`` or the home directory itself)."""
    real_root = os.path.realpath(root)
    prefix = real_root.rstrip(os.sep) + os.sep
    picked: list[str] = []
    home = home_directory()
    for doc in documents:
        real = os.path.realpath(doc)
        if not real.startswith(prefix):
            continue
        folder = project_root_of(real, real_root) or os.path.dirname(real)
        if folder != home and folder != os.path.dirname(folder):  # a file right in ~ or / widens nothing
            picked.append(folder)
    out: list[str] = []
    for d in sorted(set(picked), key=len):
        if not any(d == o or d.startswith(o.rstrip(os.sep) + os.sep) for o in out):
            out.append(d)
    return out


def git_files(root: str) -> list[str] | None:
    """Absolute paths of the files git lists under ``root`` (tracked + untracked, not ignored), or None when
    ``root`` is not inside a work tree or git is unavailable."""
    try:
        proc = subprocess.run(
            ["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True, timeout=GIT_TIMEOUT_S, check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if proc.returncode != 0:
        return None
    out = []
    seen = set()
    for raw in proc.stdout.split(b"\0"):
        if not raw:
            continue
        rel = os.fsdecode(raw)
        if rel in seen:  # a file both tracked and modified is listed once per stage
            continue
        seen.add(rel)
        out.append(os.path.join(root, rel))
    return out


def nearest_first(paths: Sequence[str], focus_dirs: Sequence[str]) -> list[str]:
    """``paths`` sorted by tree distance to the nearest of ``focus_dirs`` (directories), then depth, then name;
    without focus directories, shallow files first."""
    focus_parts = [d.split(os.sep) for d in focus_dirs]

    def key(path: str) -> tuple[int, int, str]:
        parts = path.split(os.sep)[:-1]
        best = len(parts)
        for fp in focus_parts:
            common = 0
            for a, b in zip(parts, fp):
                if a != b:
                    break
                common += 1
            best = min(best, len(parts) + len(fp) - 2 * common)
        return best, len(parts), path

    return sorted(paths, key=key)
