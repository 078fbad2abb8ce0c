"""Code actions without the protocol: Explain this, Fix this, Document this, Write unit tests.

Which actions a target offers, the question each one asks the Instruct model, and how an answer becomes
replacements inside the target (``edits``). Text and offsets in, plain data out; ``lsp/actions.py``
lists them as LSP code actions, runs their commands and applies the edits.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from ..errors import RequestError
from ..positions import LineIndex
from .chat import ChatError, ChatService, CodeContext
from .edits import Replacement, diff_replacements, extract_code_block, fit_replacement
from .testgen import supports_tests

EXPLAIN, FIX, DOCUMENT, TESTS = "explain", "fix", "document", "tests"
TITLES = {EXPLAIN: "Explain this", FIX: "Fix this", DOCUMENT: "Document this", TESTS: "Write unit tests"}
COMMANDS = {op: f"codellama.{op}" for op in TITLES}

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


class ActionError(RequestError):
    """An action that cannot run; the message is shown to the user."""


# ---------------------------------------------------------------------------------------------------
# listing


def operations(*, fixable: bool, path: str | None) -> list[str]:
    """The actions a target offers: Fix only with a diagnostic on it, tests only where a runner is known."""
    ops = [EXPLAIN]
    if fixable:
        ops.append(FIX)
    ops.append(DOCUMENT)
    if path and supports_tests(path):
        ops.append(TESTS)
    return ops


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


def rewrite_question(op: str, ctx: CodeContext, diagnostics: list[dict], flagged: list[str]) -> tuple[str, str]:
    """(question, the dedented code it quotes) for Fix or Document of ``ctx``'s span."""
    target = ctx.text[ctx.start : ctx.end]
    if not target.strip():
        raise ActionError("the range is empty; select some code first")
    code = textwrap.dedent(target)
    if op == FIX:
        first_line = LineIndex.of(ctx.text).position_at(ctx.start, "utf-32")[0]  # the line diagnostics count in
        return fix_question(code, ctx.fence, diagnostics, first_line, flagged), code
    return document_question(code, ctx.fence, ctx.language), code


def rewrite_replacements(ctx: CodeContext, answer_code: str) -> list[Replacement]:
    """The smallest replacements inside ``ctx``'s span that put the model's rewrite there."""
    replacement = fit_replacement(ctx.text[ctx.start : ctx.end], answer_code)
    return diff_replacements(ctx.text, ctx.start, ctx.end, replacement)


def rewrite_budget(service: ChatService, code: str) -> int:
    """Room for the rewritten code: about twice the original (docs, fixes) but at least the chat limit."""
    settings = service.settings
    backend = service.engines.engine.backend
    tokens = backend.count_tokens(code) if backend is not None else len(code) // 3
    return max(int(settings.chat_max_tokens), min(2 * tokens + 128, int(settings.context_tokens) // 2))


async def ask_for_code(service: ChatService, question: str, ctx: CodeContext, max_new_tokens: int) -> str:
    """Run the model on a rewrite question; the code of its fenced answer (ActionError if none)."""
    try:
        answer = await service.ask([{"role": "user", "content": question}], context=ctx,
                                   max_new_tokens=max_new_tokens, remember=False)
    except ChatError as exc:
        raise ActionError(str(exc)) from exc
    code = extract_code_block(answer.text)
    if code is None:
        raise ActionError("the model's answer had no code block; nothing was edited")
    return code


def tests_request(ctx: CodeContext, plan, existing: bool) -> str:
    """The question for Write unit tests of ``ctx``'s span (``plan``: testgen's placement)."""
    target = ctx.text[ctx.start : ctx.end]
    if not target.strip():
        raise ActionError("nothing to test here; select some code first")
    return tests_question(textwrap.dedent(target), plan.language, plan, Path(ctx.path).name, existing)
