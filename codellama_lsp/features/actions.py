"""Code actions: Explain this, Fix this, Document this, Write unit tests.

Listing (``textDocument/codeAction``) is instant: a tree-sitter look at the cursor, no model call. Each
action carries a command (``codellama.explain|fix|document|tests`` with ``[uri, range, version]`` and,
for Fix, the diagnostics) because every LSP editor executes commands; the model runs there.

Fix and Document ask the Instruct model for the rewritten target in a fenced block and turn it into the
minimal TextEdits inside the target range (``edits.py``), applied with ``workspace/applyEdit``. An action
whose document changed meanwhile is refused (ContentModified), before and after the model ran, and the
edit itself carries the version so the editor refuses it too. Write tests creates or extends the test
file where the project's test runner looks (``testgen.py``).
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp

from . import edits
from .chat import ChatError, ChatParamsError, CodeContext, document_context, encoding_of, plain, run_chat, service_for
from ..engine.backend import CancelToken
from .targets import find_target, language_name
from .testgen import plan_tests, supports_tests

log = logging.getLogger(__name__)

EXPLAIN, FIX, DOCUMENT, TESTS = "explain", "fix", "document", "tests"
TITLES = {EXPLAIN: "Explain this", FIX: "Fix this", DOCUMENT: "Document this", TESTS: "Write unit tests"}
COMMANDS = {op: f"codellama.{op}" for op in TITLES}
KINDS = {
    EXPLAIN: lsp.CodeActionKind.Empty,
    FIX: lsp.CodeActionKind.QuickFix,
    DOCUMENT: lsp.CodeActionKind.RefactorRewrite,
    TESTS: lsp.CodeActionKind.Source,
}

EXPLAIN_QUESTION = (
    "Explain what this code does: its purpose, how it works step by step, its inputs and outputs, "
    "and anything surprising or risky. Answer in Markdown."
)

# how documentation looks in each language (what "Document this" asks for)
DOC_CONVENTIONS = {
    "python": "a PEP 257 docstring as the first statement of each function/class (and comments only where the code is not obvious)",
    "javascript": "a JSDoc /** ... */ comment directly above each function/class, with @param and @returns",
    "typescript": "a TSDoc /** ... */ comment directly above each function/class, with @param and @returns",
    "tsx": "a TSDoc /** ... */ comment directly above each function/component, with @param and @returns",
    "java": "a Javadoc /** ... */ comment directly above each method/class, with @param, @return and @throws",
    "csharp": "XML documentation comments (/// <summary>, <param>, <returns>) directly above each member",
    "c": "a Doxygen /** ... */ comment directly above each function, with @param and @return",
    "cpp": "a Doxygen /** ... */ comment directly above each function/class, with @param and @return",
    "go": "a Go doc comment (// Name ...) directly above each declaration, starting with its name",
    "rust": "/// doc comments directly above each item, with # Examples only where helpful",
    "php": "a PHPDoc /** ... */ comment directly above each function/class, with @param and @return",
    "bash": "# comments directly above each function saying what it does, its arguments and output",
}


class ActionError(Exception):
    """An action that cannot run; the message is shown to the user."""


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
    start, end = edits.range_offsets(text, rng, encoding)
    tree = None
    if trees is not None and language:
        try:
            tree = trees.update(uri, text, language)
        except Exception:
            log.exception("incremental parse failed for %s", uri)
    target = find_target(text, start, end, language, tree)
    if target is None:
        return []
    target_range = lsp.Range(
        edits.position_at(text, target.start, encoding), edits.position_at(text, target.end, encoding)
    )
    range_json = {
        "start": {"line": target_range.start.line, "character": target_range.start.character},
        "end": {"line": target_range.end.line, "character": target_range.end.character},
    }
    in_range = [d for d in diagnostics or [] if _overlaps(d.range, target_range)]
    ops = [EXPLAIN]
    if in_range:
        ops.append(FIX)
    ops.append(DOCUMENT)
    if path and supports_tests(path):
        ops.append(TESTS)
    label = f" ({target.name})" if target.name else ""
    actions = []
    for op in ops:
        if not _wanted(KINDS[op], only):
            continue
        arguments: list[Any] = [uri, range_json, version]
        if op == FIX:
            arguments.append(edits.converter().unstructure(in_range))
        actions.append(
            lsp.CodeAction(
                title=TITLES[op],
                kind=KINDS[op],
                diagnostics=in_range if op == FIX else None,
                command=lsp.Command(title=f"{TITLES[op]}{label}", command=COMMANDS[op], arguments=arguments),
            )
        )
    return actions


# ---------------------------------------------------------------------------------------------------
# prompts


def fix_question(code: str, fence: str, diagnostics: list[dict], first_line: int,
                 flagged: list[str] | None = None) -> str:
    """``first_line``: the document line (0-based) the quoted code starts on, so diagnostics can be
    pointed at lines of the quote; ``flagged[i]``: the text diagnostic *i*'s range covers."""
    problems = []
    for i, d in enumerate(diagnostics):
        rng = d.get("range") if isinstance(d.get("range"), dict) else {}
        line = rng.get("start", {}).get("line")
        where = f"line {line - first_line + 1}" if isinstance(line, int) else "somewhere"
        snippet = flagged[i].strip() if flagged and i < len(flagged) and flagged[i].strip() else ""
        if snippet:
            where += f" at `{snippet[:80]}`"
        source = f" [{d['source']}]" if d.get("source") else ""
        problems.append(f"- {where}{source}: {str(d.get('message', '')).strip()}")
    listed = "\n".join(problems) if problems else "- (no diagnostics given: fix any bug you find)"
    return (
        f"Fix this code.\n```{fence}\n{code.rstrip()}\n```\nProblems reported (lines of the code above):\n{listed}\n\n"
        "Reply with the complete corrected code in one fenced code block. Change only what is needed "
        "to fix the problems; keep everything else exactly as it is."
    )


def _flagged_text(text: str, diagnostics: list[dict], encoding: str) -> list[str]:
    """The text each diagnostic's range covers (one line at most), for the prompt."""
    out = []
    for d in diagnostics:
        try:
            start, end = edits.range_offsets(text, edits.converter().structure(d["range"], lsp.Range), encoding)
        except Exception:
            out.append("")
            continue
        out.append(text[start:end].split("\n", 1)[0])
    return out


def document_question(code: str, fence: str, language: str | None) -> str:
    convention = DOC_CONVENTIONS.get(language or "", "comments in the language's usual documentation style")
    return (
        f"Add documentation to this code: {convention}.\n```{fence}\n{code.rstrip()}\n```\n\n"
        "Reply with the complete code, documentation added, in one fenced code block. Do not change "
        "the code itself."
    )


def tests_question(code: str, fence: str, plan, source_name: str, existing: bool) -> str:
    extend = (
        f" The test file `{plan.test_path.name}` already exists: reply only with the new tests to append, "
        "including any imports they need."
        if existing
        else f" Reply with the complete content of the new test file `{plan.test_path.name}`."
    )
    return (
        f"Write unit tests with {plan.framework} for this code from `{source_name}` "
        f"({plan.import_hint}). Cover the normal cases and the edge cases.\n```{fence}\n{code.rstrip()}\n```\n\n"
        f"Use one fenced code block.{extend}"
    )


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
    return getattr(ls.workspace.get_text_document(uri), "version", None)


def _refuse_if_stale(ls, uri: str, version: int | None, when: str) -> None:
    from pygls.exceptions import JsonRpcContentModified

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


def _supports_document_changes(ls) -> bool:
    caps = getattr(ls, "client_capabilities", None)
    ws_edit = getattr(getattr(caps, "workspace", None), "workspace_edit", None)
    return bool(getattr(ws_edit, "document_changes", False))


def _supports_create(ls) -> bool:
    caps = getattr(ls, "client_capabilities", None)
    ws_edit = getattr(getattr(caps, "workspace", None), "workspace_edit", None)
    ops = getattr(ws_edit, "resource_operations", None) or []
    return _supports_document_changes(ls) and any(getattr(o, "value", o) == "create" for o in ops)


async def _apply(ls, edit: lsp.WorkspaceEdit, label: str) -> lsp.ApplyWorkspaceEditResult:
    return await ls.workspace_apply_edit_async(lsp.ApplyWorkspaceEditParams(edit=edit, label=label))


async def _ask_for_code(ls, question: str, ctx: CodeContext, max_new_tokens: int) -> str:
    """Run the model on a rewrite question; the code of its fenced answer (ActionError if none)."""
    service = service_for(ls)
    cancel = CancelToken()
    try:
        answer = await service.ask(
            [{"role": "user", "content": question}], context=ctx, cancel=cancel,
            max_new_tokens=max_new_tokens, remember=False,
        )
    except ChatError as exc:
        raise ActionError(str(exc)) from exc
    code = edits.extract_code_block(answer.text)
    if code is None:
        raise ActionError("the model's answer had no code block; nothing was edited")
    return code


def _rewrite_budget(ls, code: str) -> int:
    """Room for the rewritten code: about twice the original (docs, fixes) but at least the chat limit."""
    service = service_for(ls)
    backend = getattr(service.engines.engine, "backend", None)
    tokens = backend.count_tokens(code) if backend is not None else len(code) // 3
    return max(int(ls.settings.chat_max_tokens), min(2 * tokens + 128, int(ls.settings.context_tokens) // 2))


async def rewrite_range(ls, op: str, args: tuple) -> dict:
    """Fix / Document: model rewrite of the target range -> minimal edits -> workspace/applyEdit."""
    uri, rng, version, diagnostics = _parse_arguments(args, op)
    if rng is None:
        raise ActionError(f"{COMMANDS[op]} needs a range")
    _refuse_if_stale(ls, uri, version, "before the action started")
    version = version if version is not None else _current_version(ls, uri)
    ctx = document_context(ls, uri, rng)
    ctx.show_span = False
    text, start, end = ctx.text, ctx.start, ctx.end
    target = text[start:end]
    if not target.strip():
        raise ActionError("the range is empty; select some code first")
    code = textwrap.dedent(target)
    if op == FIX:
        flagged = _flagged_text(text, diagnostics, encoding_of(ls.workspace.get_text_document(uri)))
        question = fix_question(code, ctx.fence, diagnostics, text.count("\n", 0, start), flagged)
    else:
        question = document_question(code, ctx.fence, ctx.language)
    answer_code = await _ask_for_code(ls, question, ctx, _rewrite_budget(ls, code))
    _refuse_if_stale(ls, uri, version, "while the model was working")
    replacement = edits.fit_replacement(target, answer_code)
    document = ls.workspace.get_text_document(uri)
    encoding = encoding_of(document)
    text_edits = edits.text_edits(text, edits.diff_replacements(text, start, end, replacement), encoding)
    if not text_edits:
        _show(ls, f"codellama: {TITLES[op]}: the model proposed no change")
        return {"applied": False, "edits": 0, "reason": "no_change"}
    edit = edits.document_edit(uri, version, text_edits, document_changes=_supports_document_changes(ls))
    result = await _apply(ls, edit, TITLES[op])
    if not result.applied:
        _show(ls, f"codellama: the editor did not apply the edit: {result.failure_reason or 'no reason given'}",
              lsp.MessageType.Warning)
    return {"applied": bool(result.applied), "edits": len(text_edits), "reason": result.failure_reason or ""}


async def write_tests(ls, args: tuple) -> dict:
    """Write unit tests for the target and create or extend the test file."""
    from pygls.uris import from_fs_path

    uri, rng, version, _ = _parse_arguments(args, TESTS)
    _refuse_if_stale(ls, uri, version, "before the action started")
    ctx = document_context(ls, uri, rng, widen_to_scope=True)
    ctx.show_span = False
    if not ctx.path or ctx.path == uri:
        raise ActionError("unit tests can only be written for a file on disk")
    root = getattr(ls.workspace, "root_path", None)
    plan = plan_tests(Path(ctx.path), Path(root) if root else None)
    if plan is None:
        raise ActionError(f"no test framework known for {Path(ctx.path).suffix or 'this file'}")
    test_uri = from_fs_path(str(plan.test_path))
    opened = ls.workspace.text_documents.get(test_uri)
    existing_text = opened.source if opened is not None else (
        plan.test_path.read_text(encoding="utf-8", errors="replace") if plan.exists else None
    )
    target = ctx.text[ctx.start : ctx.end]
    if not target.strip():
        raise ActionError("nothing to test here; select some code first")
    question = tests_question(textwrap.dedent(target), _fence(plan.language), plan, Path(ctx.path).name,
                              existing_text is not None and bool(existing_text.strip()))
    code = await _ask_for_code(ls, question, ctx, max(int(ls.settings.chat_max_tokens), 512))
    code = code.rstrip() + "\n"
    if existing_text is not None:
        test_doc = ls.workspace.get_text_document(test_uri)
        encoding = encoding_of(test_doc)
        edit = edits.document_edit(
            test_uri, opened.version if opened is not None else None,
            [edits.append_edit(existing_text, code, encoding)], document_changes=_supports_document_changes(ls),
        )
    elif _supports_create(ls):
        edit = edits.create_file_edit(test_uri, code)
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


def _fence(language: str) -> str:
    return language


async def explain(ls, args: tuple) -> dict:
    """Explain = chat with a prepared question about the range; streams chatChunk, answers markdown."""
    uri, rng, version, _ = _parse_arguments(args, EXPLAIN)
    _refuse_if_stale(ls, uri, version, "before the action started")
    ctx = document_context(ls, uri, rng, widen_to_scope=True)
    return await run_chat(ls, None, [{"role": "user", "content": EXPLAIN_QUESTION}], ctx)


# ---------------------------------------------------------------------------------------------------
# LSP wiring


def register(server) -> None:
    """Attach ``textDocument/codeAction`` and the four commands; called once by ``server.py``."""
    from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams

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
            language_id=getattr(document, "language_id", "") or "", path=document.path,
            diagnostics=list(params.context.diagnostics or []), only=params.context.only,
            encoding=encoding_of(document), trees=getattr(ls, "trees", None),
        ) or None

    def guarded(run):
        async def handler(ls, *args):
            try:
                return await run(ls, args)
            except ChatParamsError as exc:  # malformed arguments: InvalidParams, not a failure of ours
                raise JsonRpcInvalidParams(str(exc)) from exc
            except (ActionError, ChatError) as exc:
                _show(ls, f"codellama: {exc}", lsp.MessageType.Warning)
                raise JsonRpcException(str(exc), code=-32803) from exc  # RequestFailed

        return handler

    server.command(COMMANDS[EXPLAIN])(guarded(explain))
    server.command(COMMANDS[FIX])(guarded(lambda ls, args: rewrite_range(ls, FIX, args)))
    server.command(COMMANDS[DOCUMENT])(guarded(lambda ls, args: rewrite_range(ls, DOCUMENT, args)))
    server.command(COMMANDS[TESTS])(guarded(write_tests))
