"""Post-processing rules, one golden table per rule, then the whole pipeline."""

from __future__ import annotations

import pytest

from codellama_lsp.features.postprocess import (
    balance_brackets,
    clean,
    cut_at_block_end,
    first_line,
    trim_suffix_overlap,
)


@pytest.mark.parametrize(
    "completion,prefix,expected",
    [
        ("foo(x)\nbar()", "y = ", "foo(x)"),
        ("\nreturn 1", "", "return 1"),  # at column 0 of an empty line a leading break is noise
        ("\nreturn 1", "x = 1", ""),  # after text, a line break ends the single-line completion
    ],
)
def test_first_line(completion, prefix, expected):
    assert first_line(completion, prefix) == expected


@pytest.mark.parametrize(
    "completion,suffix,expected",
    [
        ("foo())", ")\n", "foo()"),  # the suffix's ")" closes the prefix's "("
        ("foo()", ")\n", "foo()"),  # balanced on its own: nothing to trim
        ("b, c);", ");\n", "b, c"),
        ('"name"]', '"]\n', '"name'),
        ("x + 1", "\n", "x + 1"),
        ("value)", "  ) + 2\n", "value"),
    ],
)
def test_trim_suffix_overlap(completion, suffix, expected):
    assert trim_suffix_overlap(completion, suffix) == expected


@pytest.mark.parametrize(
    "completion,suffix,multiline,expected",
    [
        ("foo(bar(x", "\n", False, "foo(bar(x))"),
        ("foo(bar(x", ")\n", False, "foo(bar(x)"),  # one closer already in the suffix
        ("foo(x)", "\n", False, "foo(x)"),
        ("items = [\n    1,\n    2,\n]\nrest = call(1,\n", "\n", True, "items = [\n    1,\n    2,\n]"),
    ],
)
def test_balance_brackets(completion, suffix, multiline, expected):
    assert balance_brackets(completion, suffix, multiline) == expected


@pytest.mark.parametrize(
    "completion,prefix,suffix,language,expected",
    [
        # python: the body ends where indentation returns to the header's level
        ("\n    return x + 1\n\ndef g():\n    pass", "def f(x):", "\n", "python", "\n    return x + 1\n"),
        # python: else/elif continue the statement
        ("\n    if x:\n        a()\n    else:\n        b()\nz = 1", "def f(x):", "\n", "python",
         "\n    if x:\n        a()\n    else:\n        b()"),
        # python at top level: one definition at a time
        ("def a():\n    pass\n\ndef b():\n    pass", "", "\n", "python", "def a():\n    pass\n"),
        # braces: the closer is kept when the suffix lacks it ...
        ("\n  return 1;\n}\n\nfunction g() {}", "function f() {", "\n", "javascript", "\n  return 1;\n}"),
        # ... left to the suffix when it already has it on the next line ...
        ("\n  return 1;\n}\nfoo();", "function f() {", "\n}\n", "javascript", "\n  return 1;"),
        # ... and "} else {" continues the statement
        ("\n    a();\n  } else {\n    b();\n  }\n  c();", "  if (x) {", "\n", "javascript",
         "\n    a();\n  } else {\n    b();\n  }"),
    ],
)
def test_cut_at_block_end(completion, prefix, suffix, language, expected):
    assert cut_at_block_end(completion, prefix, suffix, language) == expected


@pytest.mark.parametrize(
    "completion,prefix,suffix,language,multiline,expected",
    [
        ("   \n  ", "x = ", "\n", "python", False, ""),
        ("foo())", "print(", ")\n", "python", False, "foo()"),
        ("foo(bar(x", "y = ", ")\n", "python", False, "foo(bar(x)"),
        ("\n    return x + 1\n\ndef g():\n    pass\n", "def f(x):", "\n", "python", True, "\n    return x + 1"),
        # auto-paired "{|}": the model's "}" is dropped, a line break keeps the suffix's on its own line
        ("\n  return 1;\n}\n", "function f() {", "}\n", "javascript", True, "\n  return 1;\n"),
        ("x = = 1", "def f(x):\n    ", "\n", "python", False, "x"),
        ("1; ]]", "int f(void) {\n  return ", "\n}\n", "c", False, "1;"),
        ("}}}", "int f(void) {\n  return ", "\n}\n", "c", False, ""),
        ("b, c);", "foo(a, ", ");\n", "javascript", False, "b, c"),
        ("print('hi')", "", "\n", "ruby", False, "print('hi')"),  # no grammar: rules without validation
    ],
)
def test_clean(completion, prefix, suffix, language, multiline, expected):
    assert clean(completion, prefix=prefix, suffix=suffix, language=language, multiline=multiline) == expected


@pytest.mark.parametrize(
    "completion,prefix,suffix,multiline,expected",
    [
        # whole line(s) inserted above existing code keep their line break, the existing line its indentation
        ("    total = 0\n", "def f(xs):\n", "    for x in xs:\n        total += x\n", True, "    total = 0\n"),
        ("total = 0", "def f(xs):\n    ", "for x in xs:\n        pass\n", False, "total = 0\n    "),
        ("    a = 1\n    b = 2\n\ndef g():\n    pass\n", "def f():\n", "    return a + b\n", True,
         "    a = 1\n    b = 2\n"),
    ],
)
def test_new_lines_above_existing_code(completion, prefix, suffix, multiline, expected):
    assert clean(completion, prefix=prefix, suffix=suffix, language="python", multiline=multiline) == expected


@pytest.mark.parametrize(
    "completion,prefix,suffix,expected",
    [
        # the model goes on with the code after the cursor: cut where the repeat starts
        ("x = 1\n    return x\n", "def f():\n    ", "\n    return x\n", "x = 1"),
        # the rest of the line again, short but the whole of it
        (" n**2", "    return", "2\n", " n**"),
        # a closer the suffix has: the document has an unmatched bracket more with it
        ("sum(abs(x - mean)", "    return ", "an) for x in xs)\n", "sum(abs(x - me"),
        ("len(x))", "    print(", ")\n", "len(x)"),
        # a right answer that merely ends like the suffix begins is left alone
        ("a + b", "    return ", "\n", "a + b"),
    ],
)
def test_cut_suffix_repeat(completion, prefix, suffix, expected):
    from codellama_lsp.features.postprocess import cut_suffix_repeat

    assert cut_suffix_repeat(completion, prefix, suffix) == expected


@pytest.mark.parametrize(
    "completion,prefix,suffix,expected",
    [
        # a hole inside an expression: the suffix closes the brackets the completion opens
        ("sum(abs(x - me", "def f(xs, mean):\n    return ", "an) for x in xs)\n", "sum(abs(x - me"),
        # a right answer that finishes an inner block and goes on in the enclosing one
        ("        result.append(n)\n\n    result.append(numbers[-1])\n",
         "def f(numbers):\n    result = []\n    for n in numbers[:-1]:\n", "\n    return result\n",
         "        result.append(n)\n\n    result.append(numbers[-1])"),
        # ... but a new top-level definition ends it
        ("        result.append(n)\n\n\ndef main():\n    pass\n",
         "def f(numbers):\n    result = []\n    for n in numbers[:-1]:\n", "", "        result.append(n)"),
        # a span that ends inside the next line joins it
        ("     ret.add(e1)\n    return sorted(list(re", "def f(l1):\n    for e1 in l1:\n           ", "t))\n",
         "     ret.add(e1)\n    return sorted(list(re"),
        # a blank between words before the suffix is kept
        ("x for x in strings ", "def f(strings):\n    return [", "if x]\n", "x for x in strings "),
    ],
)
def test_right_answers_survive_the_clean_up(completion, prefix, suffix, expected):
    assert clean(completion, prefix=prefix, suffix=suffix, language="python", multiline=True) == expected


def test_a_completion_never_repeats_the_line_start():
    assert clean("            if not item_i:", prefix="def f(items):\n    for item_i in items:\n        if ",
                 suffix="\n            continue\n", language="python", multiline=False) == "not item_i:"
    from codellama_lsp.features.postprocess import drop_line_start_repeat

    assert drop_line_start_repeat("if_ready:", "    if ") == "if_ready:"  # another word, not a repeat


def test_python_completions_are_fitted_to_compile():
    """Tree-sitter forgives a wrong dedent, Python does not: the longest cut that compiles is kept, with the
    ``:`` a compound statement's header needs when the model stopped before it."""
    prefix = "def f(xs):\n    for x in xs:\n        if "
    suffix = "\n            print(x)\n    return xs\n"
    got = clean("x > 1:\n            y = 2\n      else:\n", prefix=prefix, suffix=suffix, language="python",
                multiline=True)
    assert got == "x > 1:\n            y = 2"
    assert clean("x > 1", prefix=prefix, suffix=suffix, language="python", multiline=False) == "x > 1:"


# ---------------------------------------------------------------- the Python fit parses the cursor's region only

_TRICKY_COMPLETIONS = [
    "", " x", " = 1", "(", ")", ":", "\n", "\n    pass", "\npass", "\nelse:\n    pass", "\n@decorator",
    "\n@decorator(\n", '"""', '\n"""\n', "'", " \\", "\n    return (1,\n", "\ndef f():\n", "\nclass C:\n    x = 1\n",
    "\n  y = 2", "\n        y = 2", "]", "\nexcept Exception:\n    pass", "\nfinally:", " if x else y", "#",
    "\nimport os\n", "\n\x00",
]


def _real_sources() -> list[str]:
    import inspect
    import json
    import textwrap
    from codellama_lsp.features import postprocess

    return [inspect.getsource(m) for m in (textwrap, json.decoder, postprocess)]


def test_the_region_fit_gives_the_whole_document_answer():
    """Whether a completion compiles, judged on the statements around the cursor, is exactly whether the whole
    document compiles with it: every line end of real files, with completions that open or close brackets and
    strings, dedent, continue an ``if``/``try`` or leave a decorator dangling."""
    from codellama_lsp.features.postprocess import PythonSplit, _compiles

    checked = differ = 0
    for source in _real_sources():
        lines = source.split("\n")
        offset = 0
        for number, line in enumerate(lines):
            offset += len(line)
            if number % 3 == 0 and offset < len(source):
                prefix, suffix = source[:offset], source[offset:]
                split = PythonSplit(prefix, suffix)
                for completion in _TRICKY_COMPLETIONS[(number // 3) % 5::5]:
                    whole = _compiles(prefix + completion + suffix)
                    differ += split.fits(completion) != whole
                    checked += 1
            offset += 1
    assert checked > 300
    assert differ == 0


def test_the_region_split_cuts_off_most_of_a_long_file():
    from codellama_lsp.features.postprocess import PythonSplit

    source = _real_sources()[0]
    offset = source.index("def dedent(")
    offset = source.index("\n", offset + 200)
    split = PythonSplit(source[:offset], source[offset:])
    assert len(split.rest_prefix) + len(split.near) < len(source) / 2
    assert (source[:offset]).endswith(split.rest_prefix) and split.near + split.far == source[offset:]


def test_inside_a_long_class_only_the_method_around_the_cursor_is_parsed_with_an_answer():
    """The statements of the class body before and after the cursor's method are checked once (each alone) and
    left out of the text parsed with each answer; the verdicts stay the whole document's."""
    from codellama_lsp.features.postprocess import PythonSplit, _compiles

    source = _real_sources()[0]
    class_start = source.index("class TextWrapper")
    class_end = source.index("\n# -- Convenience interface", class_start)
    offset = source.index("\n", source.index("lines = []", source.index("def _wrap_chunks(")))
    split = PythonSplit(source[:offset], source[offset:])
    assert split.near_kept is not None
    parsed_per_answer = len(split.lead) + len(split.near_kept) + len(split.pad)
    assert parsed_per_answer < (class_end - class_start) / 3
    assert split.lead.startswith("class TextWrapper") and "def _split(" not in split.lead
    for completion in ["", " = 1", "\n        return lines", "\n    def f(self):\n        pass", "\nx = 1",
                       "\n   y = 2", "(", '"""', "\n    @property", "\n    else:\n        pass"]:
        assert split.fits(completion) == _compiles(source[:offset] + completion + source[offset:]), completion


def test_a_request_parses_about_one_document_not_one_per_alternative(monkeypatch):
    """The clean-up of a first answer and three alternatives at one position parses (``ast.parse``) about as many
    characters as the document has once, instead of the whole document per answer and per cut tried."""
    import ast

    from codellama_lsp.features import postprocess

    source = _real_sources()[0]
    offset = source.index("\n", source.index("def indent(")) + 1
    offset = source.index("\n", offset)
    prefix, suffix = source[:offset], source[offset:]
    parsed = []
    real_parse = ast.parse
    monkeypatch.setattr(ast, "parse", lambda text, *a, **k: (parsed.append(len(text)), real_parse(text, *a, **k))[1])
    postprocess.python_split.cache_clear()
    postprocess._compiles_alone.cache_clear()
    postprocess._piece_compiles.cache_clear()

    answers = [postprocess.clean(c, prefix=prefix, suffix=suffix, language="python", multiline=True)
               for c in ("\n    x = 1\n", " foo", "\n    return (", "\n        y = 2\n    z = 3\n")]
    assert answers[0] == "\n    x = 1"
    assert sum(parsed) < 1.5 * len(source)


def test_tree_sitter_validation_parses_the_document_without_a_completion_once(monkeypatch):
    """The first answer and the alternatives of one request share the parse of the text without a completion."""
    from codellama_lsp.context import syntax

    if syntax.get_language("javascript") is None:
        pytest.skip("no tree-sitter grammar for javascript")
    prefix, suffix = "function f(a) {\n  const b = ", ";\n  return b;\n}\n"
    texts = []
    real_parse = syntax.parse
    monkeypatch.setattr(syntax, "parse", lambda text, language: (texts.append(text), real_parse(text, language))[1])
    syntax._errors_without.cache_clear()
    answers = [syntax.validate(prefix, c, suffix, "javascript") for c in ("a + 1", "a * 2", "a +", "[a")]
    assert answers[:2] == ["a + 1", "a * 2"]
    assert texts.count(prefix + suffix) == 1
