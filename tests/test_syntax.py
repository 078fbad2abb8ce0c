"""Syntax decisions per language: language detection, incremental trees, whether/how to complete, validation."""

from __future__ import annotations

import random

import pytest

from codellama_lsp.context import syntax
from codellama_lsp.context.syntax import DocumentTrees, analyze, language_for, validate

CURSOR = "<|>"


def split(sample: str) -> tuple[str, int]:
    offset = sample.index(CURSOR)
    return sample.replace(CURSOR, "", 1), offset


# language: (line ends after a block opener, mid-line, empty block body,
#            statement context for validation, a valid completion, the same completion followed by junk)
CASES = {
    "python": ("def f(x):<|>\n", "x = foo(<|> + 1)\n", "def f(x):\n    <|>\n",
               "def f(x):\n    return <|>\n", "x + 1", "x + 1)\n    y = ]"),
    "javascript": ("function f(x) {<|>}\n", "const y = f(<|> + 1);\n", "function f(x) {\n  <|>\n}\n",
                   "function f(x) {\n  return <|>\n}\n", "x + 1;", "x + 1; ]]"),
    "typescript": ("function f(x: number): number {<|>}\n", "const y: number = f(<|> + 1);\n",
                   "class A {\n  m(): void {\n    <|>\n  }\n}\n",
                   "function f(x: number) {\n  return <|>\n}\n", "x * 2;", "x * 2; )))"),
    "tsx": ("function F() {<|>}\n", "const y = g(<|> + 1);\n", "function F() {\n  <|>\n}\n",
            "function F() {\n  return <|>\n}\n", "<div>{1}</div>;", "<div>{1}</div>; }}}"),
    "java": ("class A {\n  int f(int x) {<|>}\n}\n", "class A { int y = f(<|> + 1); }\n",
             "class A {\n  void m() {\n    <|>\n  }\n}\n", "class A {\n  int f(int x) {\n    return <|>\n  }\n}\n",
             "x + 1;", "x + 1; ))"),
    "c": ("int f(int x) {<|>}\n", "int y = f(<|> + 1);\n", "int f(int x) {\n  <|>\n}\n",
          "int f(int x) {\n  return <|>\n}\n", "x + 1;", "x + 1; ]]"),
    "cpp": ("int f(int x) {<|>}\n", "auto y = f(<|> + 1);\n", "namespace n {\nint f() {\n  <|>\n}\n}\n",
            "int f(int x) {\n  return <|>\n}\n", "x + 1;", "x + 1; ]]"),
    "csharp": ("class A {\n  int F(int x) {<|>}\n}\n", "class A { int y = F(<|> + 1); }\n",
               "class A {\n  void M() {\n    <|>\n  }\n}\n",
               "class A {\n  int F(int x) {\n    return <|>\n  }\n}\n", "x + 1;", "x + 1; ))"),
    "php": ("<?php\nfunction f($x) {<|>}\n", "<?php\n$y = f(<|> + 1);\n", "<?php\nfunction f($x) {\n  <|>\n}\n",
            "<?php\nfunction f($x) {\n  return <|>\n}\n", "$x + 1;", "$x + 1; ))"),
    "bash": ("if true; then<|>\nfi\n", "echo $(<|> foo)\n", "f() {\n  <|>\n}\n",
             "f() {\n  echo <|>\n}\n", "hello", "hello )) fi ]]"),
    "go": ("package m\nfunc f(x int) int {<|>}\n", "package m\nvar y = f(<|> + 1)\n",
           "package m\nfunc f() {\n\t<|>\n}\n", "package m\nfunc f(x int) int {\n\treturn <|>\n}\n",
           "x + 1", "x + 1 ]]"),
    "rust": ("fn f(x: i32) -> i32 {<|>}\n", "fn g() { let y = f(<|> + 1); }\n", "fn f() {\n    <|>\n}\n",
             "fn f(x: i32) -> i32 {\n    <|>\n}\n", "x + 1", "x + 1 ]]"),
}


@pytest.mark.parametrize("language", sorted(CASES))
def test_grammar_loads(language):
    assert syntax.has_grammar(language), f"grammar wheel for {language} is not importable"


@pytest.mark.parametrize("language", sorted(CASES))
def test_multiline_after_block_opener(language):
    text, offset = split(CASES[language][0])
    decision = analyze(text, offset, language)
    assert decision.complete and decision.multiline, decision


@pytest.mark.parametrize("language", sorted(CASES))
def test_single_line_mid_line(language):
    text, offset = split(CASES[language][1])
    decision = analyze(text, offset, language)
    assert decision.complete and not decision.multiline, decision
    assert decision.stop_strings == ["\n"]


@pytest.mark.parametrize("language", sorted(CASES))
def test_multiline_in_empty_block_body(language):
    text, offset = split(CASES[language][2])
    decision = analyze(text, offset, language)
    assert decision.complete and decision.multiline, decision


@pytest.mark.parametrize("language", sorted(CASES))
def test_validate_keeps_valid_completion(language):
    text, offset = split(CASES[language][3])
    good = CASES[language][4]
    assert validate(text[:offset], good, text[offset:], language) == good


@pytest.mark.parametrize("language", sorted(CASES))
def test_validate_trims_completion_that_breaks_the_parse(language):
    text, offset = split(CASES[language][3])
    good, bad = CASES[language][4], CASES[language][5]
    assert validate(text[:offset], bad, text[offset:], language) == good


@pytest.mark.parametrize("language", sorted(CASES))
def test_validate_drops_completion_with_nothing_valid(language):
    text, offset = split(CASES[language][3])
    assert validate(text[:offset], ")]}", text[offset:], language) == ""


def test_validate_trims_to_last_valid_line():
    prefix = "def f(x):\n    "
    completion = "y = x * 2\n    z = y + 1\n    return (z"
    # whole lines first, then token by token inside the first line that breaks the parse
    assert validate(prefix, completion, "\n", "python") == "y = x * 2\n    z = y + 1\n    return"
    completion = "y = x * 2\n    z = = 1\n    w = 3"
    assert validate(prefix, completion, "\n", "python") == "y = x * 2\n    z"


def test_validate_allows_leaving_the_users_unfinished_construct_open():
    # the user typed "foo(" with no closer; a completion that does not close it adds no new error
    assert validate("x = foo(", "a, b)", "\n", "python") == "a, b)"


def test_validate_without_grammar_returns_input():
    assert validate("x = ", "1 +", "\n", "ruby") == "1 +"
    assert validate("x = ", "1 +", "\n", None) == "1 +"


def test_no_completion_inside_identifier():
    text, offset = split("value = comp<|>ute(1)\n")
    decision = analyze(text, offset, "python")
    assert not decision.complete and "identifier" in decision.reason


def test_no_completion_right_before_identifier():
    text, offset = split("value = <|>compute(1)\n")
    assert not analyze(text, offset, "python").complete


def test_line_end_after_partial_word_completes_single_line():
    text, offset = split("import os\nvalue = os.pa<|>\n")
    decision = analyze(text, offset, "python")
    assert decision.complete and not decision.multiline


def test_docstring_and_comment_complete_single_line():
    text, offset = split('def f():\n    """Return the<|>\n    """\n')
    decision = analyze(text, offset, "python")
    assert decision.complete and not decision.multiline and "docstring" in decision.reason
    text, offset = split("x = 1  # the answer<|>\n")
    decision = analyze(text, offset, "python")
    assert decision.complete and not decision.multiline and "comment" in decision.reason


def test_python_multiline_stop_strings_follow_header_indent():
    text, offset = split("class A:\n    def m(self):<|>\n")
    decision = analyze(text, offset, "python")
    assert decision.multiline
    assert "\n    def " in decision.stop_strings


def test_unknown_language_still_decides_by_text():
    text, offset = split("fn main() {<|>}\n")
    decision = analyze(text, offset, None)
    assert decision.complete and decision.multiline


@pytest.mark.parametrize(
    "language_id,path,expected",
    [
        ("python", None, "python"),
        ("typescriptreact", None, "tsx"),
        ("javascriptreact", None, "javascript"),
        ("shellscript", None, "bash"),
        ("c#", None, "csharp"),
        ("", "/x/main.rs", "rust"),
        (None, "/x/a.hpp", "cpp"),
        ("plaintext", "/x/a.go", "go"),
        (None, "/x/Makefile", "make"),
        (None, "/x/notes.unknown", None),
    ],
)
def test_language_for(language_id, path, expected):
    assert language_for(language_id, path) == expected


def _sexp(tree) -> str:
    return str(tree.root_node)


def test_document_trees_incremental_updates_match_fresh_parses():
    rng = random.Random(7)
    trees = DocumentTrees()
    text = "def f(x):\n    return x\n\nclass A:\n    def m(self):\n        pass\n"
    trees.update("file:///a.py", text, "python")
    inserts = ["y = 1\n", "(", ")", "    ", "é", "# ünïcode\n", "def g():\n    return 2\n", ""]
    for _ in range(40):
        pos = rng.randrange(len(text) + 1)
        cut = rng.randrange(0, 4)
        text = text[:pos] + rng.choice(inserts) + text[pos + cut:]
        tree = trees.update("file:///a.py", text, "python")
        assert _sexp(tree) == _sexp(syntax.parse(text, "python"))
    assert trees.tree_for("file:///a.py", text) is tree
    assert trees.tree_for("file:///a.py", text + " ") is None


def test_document_trees_apply_edit():
    trees = DocumentTrees()
    old = "int main() { return 0; }\n"
    trees.update("u", old, "c")
    new = "int main() { return 10; }\n"
    # insert "1" at byte 20 (row 0, column 20)
    tree = trees.apply_edit("u", 20, 20, 21, (0, 20), (0, 20), (0, 21), new)
    assert _sexp(tree) == _sexp(syntax.parse(new, "c"))
    trees.close("u")
    assert trees.tree("u") is None


def test_document_trees_without_grammar_degrade():
    trees = DocumentTrees()
    assert trees.update("u", "puts 1", "ruby") is None
    assert trees.tree("u") is None


def test_line_start_before_existing_code_is_new_lines_above():
    text, offset = split("def f(x):\n<|>    return x\n")
    decision = analyze(text, offset, "python")
    assert decision.complete and decision.multiline and "line start" in decision.reason


def test_blank_line_is_multiline():
    text, offset = split("def f(x):\n    y = 1\n    <|>\n    return y\n")
    decision = analyze(text, offset, "python")
    assert decision.complete and decision.multiline


def test_no_completion_on_a_minified_line_even_when_invoked():
    text = "".join(f"var a{i}=function(b){{return b*{i}}};" for i in range(2_000))
    decision = syntax.analyze(text, len(text) // 2, "javascript", force=True)
    assert not decision.complete and "too long" in decision.reason


def test_an_invoked_request_may_span_lines():
    """Automatic requests mid-line complete the rest of the line; an explicit one may fill a hole that goes on
    over several lines (the model ends it; the clean-up cuts an overrun), so "\\n" does not stop it."""
    text, offset = split("def f(xs):\n    return sum(<|>) + 1\n")
    assert not analyze(text, offset, "python").multiline
    invoked = analyze(text, offset, "python", force=True)
    assert invoked.complete and invoked.multiline and "\n" not in invoked.stop_strings
