"""Where the tests for a source file go, and in which framework they are written.

"Write unit tests" is only useful if the result runs with the project's own test command, so the
framework is read from the project (package.json, pyproject/setup.cfg, go.mod, Cargo.toml, Maven/Gradle
files, existing test files) and the test file is placed where that ecosystem's runner looks for it.
Pure file-system reads, no model: the decision is instant and tested directly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

_ROOT_MARKERS = (
    ".git",
    "pyproject.toml",
    "setup.cfg",
    "setup.py",
    "package.json",
    "go.mod",
    "Cargo.toml",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
)

_EXTENSIONS = {
    ".py": "python",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
}


@dataclass(frozen=True)
class TestPlan:
    """What "Write unit tests" produces for one source file."""

    framework: str  # "pytest", "unittest", "jest", "vitest", "mocha", "go test", "cargo test", "junit"
    test_path: Path  # the file to create or extend
    language: str  # language of the test file
    import_hint: str  # how the test file reaches the code under test (shown to the model)

    @property
    def exists(self) -> bool:
        return self.test_path.is_file()


def project_root(path: Path, stop: Path | None = None) -> Path:
    """The nearest ancestor of ``path`` holding a project marker (else the file's own directory)."""
    for parent in path.parents:
        if any((parent / marker).exists() for marker in _ROOT_MARKERS):
            return parent
        if stop is not None and parent == stop:
            break
    return path.parent


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[:200_000]
    except OSError:
        return ""


def _python_framework(root: Path) -> str:
    for name in ("pyproject.toml", "setup.cfg", "tox.ini", "pytest.ini", "requirements-dev.txt", "requirements.txt"):
        if re.search(r"\bpytest\b", _read(root / name)):
            return "pytest"
    if (root / "conftest.py").exists() or (root / "tests" / "conftest.py").exists():
        return "pytest"
    for test_file in list(root.glob("test*/**/test_*.py"))[:20]:
        text = _read(test_file)
        if "import unittest" in text or "unittest.TestCase" in text:
            return "unittest"
        if "pytest" in text or re.search(r"^def test_", text, re.M):
            return "pytest"
    return "pytest"


def _js_framework(root: Path) -> str:
    try:
        package = json.loads(_read(root / "package.json") or "{}")
    except json.JSONDecodeError:
        package = {}
    deps: dict = {}
    for key in ("devDependencies", "dependencies", "peerDependencies"):
        if isinstance(package.get(key), dict):
            deps.update(package[key])
    scripts = package.get("scripts") if isinstance(package.get("scripts"), dict) else {}
    test_script = str(scripts.get("test", ""))
    for name in ("vitest", "jest", "mocha"):
        if name in deps or re.search(rf"\b{name}\b", test_script):
            return name
    return "jest"


def _python_module(path: Path, root: Path) -> str:
    rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    parts = list(rel.with_suffix("").parts)
    if parts and parts[0] == "src":
        parts = parts[1:]
    return ".".join(parts)


def supports_tests(path: str | Path) -> bool:
    """Whether ``plan_tests`` knows where tests for ``path`` go (a name check: no disk access)."""
    return Path(path).suffix in _EXTENSIONS


def plan_tests(path: Path, workspace_root: Path | None = None) -> TestPlan | None:
    """The test plan for ``path``, or None for a language we do not place tests for."""
    path = Path(path)
    language = _EXTENSIONS.get(path.suffix)
    if language is None:
        return None
    root = project_root(path, stop=workspace_root)
    stem = path.stem
    if language == "python":
        framework = _python_framework(root)
        tests_dir = root / "tests" if (root / "tests").is_dir() else (root / "test" if (root / "test").is_dir() else None)
        name = f"test_{stem}.py"
        test_path = tests_dir / name if tests_dir is not None else path.with_name(name)
        module = _python_module(path, root)
        return TestPlan(framework, test_path, language, f"from {module} import ...")
    if language in ("javascript", "typescript"):
        framework = _js_framework(root)
        test_path = path.with_name(f"{stem}.test{path.suffix}")
        return TestPlan(framework, test_path, language, f"import {{ ... }} from './{stem}'")
    if language == "go":
        package = re.search(r"^package\s+(\w+)", _read(path), re.M)
        pkg = package.group(1) if package else path.parent.name
        return TestPlan("go test", path.with_name(f"{stem}_test.go"), language, f"package {pkg}")
    if language == "rust":
        crate = re.search(r'^name\s*=\s*"([^"]+)"', _read(root / "Cargo.toml"), re.M)
        crate_name = crate.group(1).replace("-", "_") if crate else "crate"
        return TestPlan("cargo test", root / "tests" / f"{stem}_test.rs", language, f"use {crate_name}::...;")
    # java
    rel = str(path)
    if "/src/main/java/" in rel:
        test_path = Path(rel.replace("/src/main/java/", "/src/test/java/", 1)).with_name(f"{stem}Test.java")
    else:
        test_path = path.with_name(f"{stem}Test.java")
    package = re.search(r"^package\s+([\w.]+)\s*;", _read(path), re.M)
    hint = f"package {package.group(1)};" if package else "(default package)"
    return TestPlan("junit", test_path, language, hint)
