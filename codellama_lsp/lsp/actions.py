"""Code actions over LSP: ``textDocument/codeAction`` and the ``codellama.explain|fix|document|tests`` commands.

Listing is instant: a tree-sitter look at the cursor, no model call. Each action carries a command with
``[uri, range, version]`` (and, for Fix, the diagnostics) because every LSP editor executes commands; the
model runs there. Fix and Document turn the model's rewrite into minimal TextEdits inside the target range,
applied with ``workspace/applyEdit``. An action whose document changed meanwhile is refused
(ContentModified), before and after the model ran, and the edit itself carries the version so the editor
refuses it too. Write tests creates or extends the test file where the project's test runner looks.
What each action asks and how an answer becomes edits is ``features/actions.py``'s.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcContentModified
from pygls.uris import from_fs_path

from ..features import actions
from ..features.actions import COMMANDS, DOCUMENT, EXPLAIN, FIX, TESTS, TITLES, ActionError
from ..features.edits import append_replacement
from ..features.targets import find_target, language_name
from ..features.testgen import plan_tests
from . import ranges, text_edits
from .chat import document_context, run_chat, service_for
from .errors import guarded_command
from .params import converter, plain

log = logging.getLogger(__name__)

KINDS = {
    EXPLAIN: lsp.CodeActionKind.Empty,
    FIX: lsp.CodeActionKind.QuickFix,
    DOCUMENT: lsp.CodeActionKind.RefactorRewrite,
    TESTS: lsp.CodeActionKind.Source,
}


# ---------------------------------------------------------------------------------------------------
# listing


def _overlaps(a: lsp.Range, b: lsp.Range) -> bool:
    a0, a1 = (a.start.line, a.start.character), (a.end.line, a.end.character)
    b0, b1 = (b.start.line, b.start.character), (b.end.line, b.end.character)
    return a0 <= b1 and b0 <= a1


def _wanted(kind: str, only: list[str] | None) -> bool:
    if not only:
        return True
    return any(kind == o or kind.startswith(f"{o}.") for o in only if o) or (kind == "" and "" in only)


def list_actions(
    text: str, uri: str, version: int | None, rng: lsp.Range, *, language_id: str = "", path: str | None = None,
    diagnostics: list[lsp.Diagnostic] | None = None, only: list[str] | None = None, encoding: str = "utf-16",
    trees=None,
) -> list[lsp.CodeAction]:
    """The actions for ``rng`` (a selection, or a cursor inside a function/class). No model, no disk
    reads beyond a file-name check; ``trees`` (the server's DocumentTrees) makes the parse incremental."""
    language = language_name(language_id, path)
    start, end = ranges.offsets(text, rng, encoding)
    tree = None
    if trees is not None and language:
        try:
            tree = trees.update(uri, text, language)
        except Exception:
            log.exception("incremental parse failed for %s", uri)
    target = find_target(text, start, end, language, tree)
    if target is None:
        return []
    target_range = ranges.to_range(text, target.start, target.end, encoding)
    range_json = {
        "start": {"line": target_range.start.line, "character": target_range.start.character},
        "end": {"line": target_range.end.line, "character": target_range.end.character},
    }
    in_range = [d for d in diagnostics or [] if _overlaps(d.range, target_range)]
    label = f" ({target.name})" if target.name else ""
    found = []
    for op in actions.operations(fixable=bool(in_range), path=path):
        if not _wanted(KINDS[op], only):
            continue
        arguments: list[Any] = [uri, range_json, version]
        if op == FIX:
            arguments.append(converter().unstructure(in_range))
        found.append(
            lsp.CodeAction(
                title=TITLES[op],
                kind=KINDS[op],
                diagnostics=in_range if op == FIX else None,
                command=lsp.Command(title=f"{TITLES[op]}{label}", command=COMMANDS[op], arguments=arguments),
            )
        )
    return found


def flagged_text(text: str, diagnostics: list[dict], encoding: str) -> list[str]:
    """The text each diagnostic's range covers (one line at most), for the Fix prompt."""
    out = []
    for d in diagnostics:
        try:
            start, end = ranges.offsets(text, converter().structure(d["range"], lsp.Range), encoding)
        except Exception:
            out.append("")
            continue
        out.append(text[start:end].split("\n", 1)[0])
    return out


# ---------------------------------------------------------------------------------------------------
# running


def _parse_arguments(args: tuple, op: str) -> tuple[str, dict | None, int | None, list[dict]]:
    args = tuple(plain(list(args)))
    if not args or not isinstance(args[0], str):
        raise ActionError(f"{COMMANDS[op]} takes [uri, range, version]")
    uri = args[0]
    rng = args[1] if len(args) > 1 and isinstance(args[1], dict) else None
    version = args[2] if len(args) > 2 and isinstance(args[2], int) and not isinstance(args[2], bool) else None
    diagnostics = args[3] if len(args) > 3 and isinstance(args[3], list) else []
    return uri, rng, version, [d for d in diagnostics if isinstance(d, dict)]


def _current_version(ls, uri: str) -> int | None:
    return ls.workspace.get_text_document(uri).version


def _refuse_if_stale(ls, uri: str, version: int | None, when: str) -> None:
    current = _current_version(ls, uri)
    if version is not None and current is not None and current != version:
        message = (
            f"codellama: the document changed {when} (version {version} -> {current}); "
            "nothing was edited, run the action again"
        )
        _show(ls, message, lsp.MessageType.Warning)
        raise JsonRpcContentModified(message)


def _show(ls, message: str, kind: lsp.MessageType = lsp.MessageType.Info) -> None:
    try:
        ls.window_show_message(lsp.ShowMessageParams(type=kind, message=message))
    except Exception:
        log.exception("showMessage failed")


def _workspace_edit_caps(ls):
    caps = ls.client_capabilities
    return caps.workspace.workspace_edit if caps is not None and caps.workspace is not None else None


def _supports_document_changes(ls) -> bool:
    ws_edit = _workspace_edit_caps(ls)
    return bool(ws_edit is not None and ws_edit.document_changes)


def _supports_create(ls) -> bool:
    ws_edit = _workspace_edit_caps(ls)
    ops = (ws_edit.resource_operations if ws_edit is not None else None) or []
    return _supports_document_changes(ls) and any(getattr(o, "value", o) == "create" for o in ops)


async def _apply(ls, edit: lsp.WorkspaceEdit, label: str) -> lsp.ApplyWorkspaceEditResult:
    return await ls.workspace_apply_edit_async(lsp.ApplyWorkspaceEditParams(edit=edit, label=label))


async def rewrite_range(ls, op: str, args: tuple) -> dict:
    """Fix / Document: model rewrite of the target range -> minimal edits -> workspace/applyEdit."""
    uri, rng, version, diagnostics = _parse_arguments(args, op)
    if rng is None:
        raise ActionError(f"{COMMANDS[op]} needs a range")
    _refuse_if_stale(ls, uri, version, "before the action started")
    version = version if version is not None else _current_version(ls, uri)
    ctx = document_context(ls, uri, rng)
    ctx.show_span = False
    encoding = ranges.encoding_of(ls.workspace.get_text_document(uri))
    flagged = flagged_text(ctx.text, diagnostics, encoding) if op == FIX else []
    question, code = actions.rewrite_question(op, ctx, diagnostics, flagged)
    service = service_for(ls)
    answer_code = await actions.ask_for_code(service, question, ctx, actions.rewrite_budget(service, code))
    _refuse_if_stale(ls, uri, version, "while the model was working")
    edits = text_edits.text_edits(ctx.text, actions.rewrite_replacements(ctx, answer_code), encoding)
    if not edits:
        _show(ls, f"codellama: {TITLES[op]}: the model proposed no change")
        return {"applied": False, "edits": 0, "reason": "no_change"}
    edit = text_edits.document_edit(uri, version, edits, document_changes=_supports_document_changes(ls))
    result = await _apply(ls, edit, TITLES[op])
    if not result.applied:
        _show(ls, f"codellama: the editor did not apply the edit: {result.failure_reason or 'no reason given'}",
              lsp.MessageType.Warning)
    return {"applied": bool(result.applied), "edits": len(edits), "reason": result.failure_reason or ""}


async def write_tests(ls, args: tuple) -> dict:
    """Write unit tests for the target and create or extend the test file."""
    uri, rng, version, _ = _parse_arguments(args, TESTS)
    _refuse_if_stale(ls, uri, version, "before the action started")
    ctx = document_context(ls, uri, rng, widen_to_scope=True)
    ctx.show_span = False
    if not ctx.path or ctx.path == uri:
        raise ActionError("unit tests can only be written for a file on disk")
    root = ls.workspace.root_path
    plan = plan_tests(Path(ctx.path), Path(root) if root else None)
    if plan is None:
        raise ActionError(f"no test framework known for {Path(ctx.path).suffix or 'this file'}")
    test_uri = from_fs_path(str(plan.test_path))
    opened = ls.workspace.text_documents.get(test_uri)
    existing_text = opened.source if opened is not None else (
        plan.test_path.read_text(encoding="utf-8", errors="replace") if plan.exists else None
    )
    question = actions.tests_request(ctx, plan, existing_text is not None and bool(existing_text.strip()))
    code = await actions.ask_for_code(service_for(ls), question, ctx, max(int(ls.settings.chat_max_tokens), 512))
    code = code.rstrip() + "\n"
    if existing_text is not None:
        encoding = ranges.encoding_of(ls.workspace.get_text_document(test_uri))
        edit = text_edits.document_edit(
            test_uri, opened.version if opened is not None else None,
            text_edits.text_edits(existing_text, [append_replacement(existing_text, code)], encoding),
            document_changes=_supports_document_changes(ls),
        )
    elif _supports_create(ls):
        edit = text_edits.create_file_edit(test_uri, code)
    else:  # the editor opens a buffer for the new file; the user saves it
        edit = lsp.WorkspaceEdit(changes={test_uri: [lsp.TextEdit(lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)), code)]})
    result = await _apply(ls, edit, TITLES[TESTS])
    return {
        "applied": bool(result.applied),
        "uri": test_uri,
        "framework": plan.framework,
        "created": existing_text is None,
        "reason": result.failure_reason or "",
    }


async def explain(ls, args: tuple) -> dict:
    """Explain = chat with a prepared question about the range; streams chatChunk, answers markdown."""
    uri, rng, version, _ = _parse_arguments(args, EXPLAIN)
    _refuse_if_stale(ls, uri, version, "before the action started")
    ctx = document_context(ls, uri, rng, widen_to_scope=True)
    return await run_chat(ls, None, [{"role": "user", "content": actions.EXPLAIN_QUESTION}], ctx)


# ---------------------------------------------------------------------------------------------------
# registration


def register(server) -> None:
    """Attach ``textDocument/codeAction`` and the four commands to ``server``."""

    @server.feature(
        lsp.TEXT_DOCUMENT_CODE_ACTION,
        lsp.CodeActionOptions(code_action_kinds=sorted({k for k in KINDS.values() if k}), resolve_provider=False),
    )
    async def code_action(ls, params: lsp.CodeActionParams) -> list[lsp.CodeAction] | None:
        try:
            document = ls.workspace.get_text_document(params.text_document.uri)
            text = document.source
        except OSError:
            return None
        return list_actions(
            text, params.text_document.uri, document.version, params.range,
            language_id=document.language_id or "", path=document.path,
            diagnostics=list(params.context.diagnostics or []), only=params.context.only,
            encoding=ranges.encoding_of(document), trees=ls.trees,
        ) or None

    def shown(ls, exc: Exception) -> None:
        _show(ls, f"codellama: {exc}", lsp.MessageType.Warning)

    server.command(COMMANDS[EXPLAIN])(guarded_command(explain, on_failure=shown))
    server.command(COMMANDS[FIX])(guarded_command(lambda ls, args: rewrite_range(ls, FIX, args), on_failure=shown))
    server.command(COMMANDS[DOCUMENT])(guarded_command(lambda ls, args: rewrite_range(ls, DOCUMENT, args), on_failure=shown))
    server.command(COMMANDS[TESTS])(guarded_command(write_tests, on_failure=shown))
