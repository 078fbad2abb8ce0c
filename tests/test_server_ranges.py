"""The two rules that decide what an inline suggestion replaces, without a model: auto-closed
brackets after the cursor, and the typing-along cache."""

from __future__ import annotations

import pytest

from codellama_lsp.features.completion import _Shown, closer_overlap, suggestion_edit, typed_along


@pytest.mark.parametrize(
    ("completion", "suffix", "replaced"),
    [
        ("a, b)", ")\n", 1),  # foo(|) -> the completion's ")" replaces the auto-closed one
        ("x])", "])\n", 2),  # nested closers, all supplied by the completion
        ("x]", "])\n", 1),  # only the "]" is supplied: the ")" stays
        ("name'", "'", 1),  # a closing quote
        ("a, b", ")\n", 0),  # completion stops before the closer: nothing replaced
        ("(1)", "\nnext", 0),  # nothing auto-closed after the cursor
        ("x) + y", ")", 0),  # the closer is not at the end of the completion
        ("ok)", "x)", 0),  # a non-closer right after the cursor: replace nothing
    ],
)
def test_closer_overlap(completion, suffix, replaced):
    assert closer_overlap(completion, suffix) == replaced


SHOWN = _Shown(prefix="def add(a, b):\n    return ", suffix="\n", completion="a + b", language="python")


def test_typing_the_first_characters_answers_the_rest():
    text = SHOWN.prefix + "a +" + SHOWN.suffix
    assert typed_along(SHOWN, text, len(SHOWN.prefix) + 3) == " b"


def test_typing_something_else_misses():
    text = SHOWN.prefix + "b" + SHOWN.suffix
    assert typed_along(SHOWN, text, len(SHOWN.prefix) + 1) is None


def test_typing_the_whole_suggestion_misses():
    text = SHOWN.prefix + "a + b" + SHOWN.suffix
    assert typed_along(SHOWN, text, len(text) - 1) is None


def test_the_same_state_again_gives_the_whole_suggestion():
    assert typed_along(SHOWN, SHOWN.prefix + SHOWN.suffix, len(SHOWN.prefix)) == "a + b"


def test_a_changed_suffix_misses_but_an_auto_closed_bracket_is_allowed():
    shown = _Shown(prefix="print", suffix="\n", completion="(len(x))", language="python")
    assert typed_along(shown, "print(\nother", 6) is None
    assert typed_along(shown, "print()\n", 6) == "len(x))"


def test_an_edit_before_the_cursor_misses():
    text = "# edited\n" + SHOWN.prefix + "a" + SHOWN.suffix
    assert typed_along(SHOWN, text, len(text) - 1) is None


def test_closers_after_the_cursor_are_replaced_or_with_a_selected_menu_item_left_out():
    # `min(items, key=lambda i: i.pr|)`: the model completes "ices)"; the ")" is already there.
    assert suggestion_edit("", "ices)", ")\n", 40) == ("ices)", 41)  # the range grows over ")"
    # The suggest widget's item "price" is selected: VS Code keeps the item's range, so no second ")".
    assert suggestion_edit("price", "s)", ")\n", 40) == ("prices", 40)
    assert suggestion_edit("price", "s", ")\n", 40) == ("prices", 40)
