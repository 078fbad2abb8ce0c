"""The package's layering, checked over the source with ``ast`` (no import needed, so nothing is skipped):

- only ``lsp/`` imports pygls or lsprotocol (plus ``evaluation/lsp_driver.py``, which is an LSP *client*: it
  drives the real server over stdio the way an editor does);
- ``features/`` never imports ``lsp/``: features take text and offsets and return plain data;
- ``context/`` and ``engine/`` import neither ``lsp/`` nor ``features/`` (the layers below them);
- the module-level imports of the package form no cycle;
- handlers use the server's public names only (no ``ls._inflight``, ``ls.protocol._shutdown``), and so do
  the server's parts in ``lsp/`` that hold it (``self._server._load_task`` is as private as ``ls._load_task``);
- ``lsp/server.py`` is the top of ``lsp/``: its parts never import it (they get the server object), and the
  only module that does is the ``serve`` command that starts it.

Imports inside functions count for the first three rules (a lazy import is still a dependency) but not for
cycles (they run after every module has loaded).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "codellama_lsp"
PROTOCOL_LIBRARIES = ("pygls", "lsprotocol")
LSP_CLIENTS = {"codellama_lsp.evaluation.lsp_driver"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, *, module_level_only: bool = False) -> list[str]:
    """Absolute names ``name`` imports; a ``from X import y`` names ``X.y`` when that is a module."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = _module_level(tree.body) if module_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.append(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
    return found


def _module_level(body):
    """Statements that run at import time: the top level, and the bodies of top-level if/try/with blocks."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody"):
                yield from _module_level(getattr(node, field, []))
            for handler in getattr(node, "handlers", []):
                yield from _module_level(handler.body)


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_sources_are_found():
    assert "codellama_lsp.lsp.server" in MODULES and "codellama_lsp.features.completion" in MODULES
    assert len(MODULES) > 50


def test_only_lsp_imports_pygls_or_lsprotocol():
    offenders = [(name, target) for name in MODULES for target in imports(name)
                 if target.split(".")[0] in PROTOCOL_LIBRARIES
                 and not within(name, "codellama_lsp.lsp") and name not in LSP_CLIENTS]
    assert offenders == []


def test_features_never_import_lsp():
    offenders = [(name, target) for name in MODULES if within(name, "codellama_lsp.features")
                 for target in imports(name) if within(target, "codellama_lsp.lsp")]
    assert offenders == []


def test_context_and_engine_import_no_layer_above_them():
    above = ("codellama_lsp.lsp", "codellama_lsp.features", "codellama_lsp.commands")
    offenders = [(name, target) for name in MODULES
                 if within(name, "codellama_lsp.context") or within(name, "codellama_lsp.engine")
                 for target in imports(name) if any(within(target, layer) for layer in above)]
    assert offenders == []


def test_no_import_cycle_at_module_level():
    graph = {name: {t for t in imports(name, module_level_only=True) if t in MODULES and t != name} for name in MODULES}
    cycles = [scc for scc in _strongly_connected(graph) if len(scc) > 1]
    assert cycles == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    scc = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        scc.append(member)
                        if member == node:
                            break
                    out.append(scc)
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def test_handlers_do_not_reach_private_fields_of_the_server():
    offenders = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if _reaches_the_server(node.value):
                    offenders.append((name, node.lineno, node.attr))
    assert offenders == []


def _reaches_the_server(owner: ast.expr) -> bool:
    """``ls``, ``server``, ``self._server`` or ``self.server``, or an attribute of one (``ls.protocol``)."""
    while isinstance(owner, ast.Attribute):
        if owner.attr in ("_server", "server") and isinstance(owner.value, ast.Name) and owner.value.id == "self":
            return True
        owner = owner.value
    return isinstance(owner, ast.Name) and owner.id in ("ls", "server")


def test_the_private_field_check_sees_through_attributes():
    def owner(expr: str) -> ast.expr:
        return ast.parse(expr, mode="eval").body.value

    assert _reaches_the_server(owner("ls.protocol._shutdown"))
    assert _reaches_the_server(owner("self._server._load_task"))
    assert _reaches_the_server(owner("self._server.engine._worker"))
    assert not _reaches_the_server(owner("self._load_task"))
    assert not _reaches_the_server(owner("self.index._worker"))


def test_only_the_serve_command_imports_the_server_module():
    server = "codellama_lsp.lsp.server"
    importers = sorted(name for name in MODULES if name != server and server in imports(name))
    assert importers == ["codellama_lsp.commands.serve"]


def test_the_cycle_check_finds_a_cycle():
    assert [sorted(c) for c in _strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) if len(c) > 1] == [["a", "b"]]
