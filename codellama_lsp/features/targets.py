"""What a code action works on: the selection, or else the function/class around the cursor.

Listing code actions must be instant (the menu opens on every cursor move in some editors), so this is
a tree-sitter parse and a walk up from the cursor — no model, no repository scan. A scope is widened to
whole lines, so the model sees (and rewrites) complete lines with their indentation, which is what
makes its answer fit back in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..context import syntax

# node types that make a meaningful unit to explain/fix/document
_SCOPES = {
    # python
    "function_definition", "class_definition", "decorated_definition",
    # javascript / typescript
    "function_declaration", "generator_function_declaration", "method_definition", "class_declaration",
    "abstract_class_declaration", "interface_declaration",
    # java / c#
    "method_declaration", "constructor_declaration", "enum_declaration", "record_declaration",
    "struct_declaration",
    # c / c++
    "class_specifier", "struct_specifier",
    # rust
    "function_item", "impl_item", "struct_item", "enum_item", "trait_item",
    # go
    "type_declaration",
}
# statements that wrap a scope and belong to it (decorators, `export`, `const f = () => {}`)
_WRAPPERS = {"decorated_definition", "export_statement"}
_ARROW_HOLDERS = {"lexical_declaration", "variable_declaration"}


def language_name(language_id: str, path: str | Path | None = None) -> str | None:
    """The tree-sitter language for an LSP languageId or, failing that, the file suffix (None without a grammar)."""
    found = syntax.language_for(language_id, str(path) if path else "")
    return found if syntax.has_grammar(found) else None


@dataclass(frozen=True)
class Target:
    """A span of the document (character offsets) and what it is."""

    start: int
    end: int
    kind: str  # "selection" or the tree-sitter node type, e.g. "function_definition"
    name: str = ""  # the function/class name when known


def _char_offset(data: bytes, byte_offset: int) -> int:
    return len(data[:byte_offset].decode("utf-8", errors="ignore"))


def _name_of(node) -> str:
    named = node.child_by_field_name("name")
    if named is None and node.type in _WRAPPERS | _ARROW_HOLDERS:
        for child in node.named_children:
            found = _name_of(child)
            if found:
                return found
        return ""
    if named is None and node.type == "function_definition":  # C/C++: declarator holds the name
        declarator = node.child_by_field_name("declarator")
        while declarator is not None and declarator.child_by_field_name("declarator") is not None:
            declarator = declarator.child_by_field_name("declarator")
        named = declarator
    return named.text.decode("utf-8", errors="replace") if named is not None and named.text else ""


def _is_scope(node) -> bool:
    if node.type in _SCOPES:
        return True
    if node.type in _ARROW_HOLDERS:  # const f = (...) => {...} / function expression
        return any(
            d.type == "variable_declarator"
            and (v := d.child_by_field_name("value")) is not None
            and v.type in ("arrow_function", "function_expression", "function")
            for d in node.named_children
        )
    return False


def enclosing_scope(text: str, offset: int, language: str, tree=None) -> Target | None:
    """The innermost function/class/method containing ``offset``, widened to whole lines.

    ``tree``: the document's current tree when the caller keeps one (the server's incremental
    ``DocumentTrees``), which makes this a walk of a few nodes instead of a parse."""
    data = text.encode("utf-8", "surrogatepass")
    if tree is None:
        tree = syntax.parse(text, language)  # the context engine's per-thread parsers
        if tree is None:  # no grammar for this language: no scope, never a crash
            return None
    byte_offset = len(text[:offset].encode("utf-8"))
    node = tree.root_node.named_descendant_for_byte_range(byte_offset, byte_offset)
    # the cursor sitting right after a scope's last character still means that scope
    if node is not None and node.type == tree.root_node.type and byte_offset:
        node = tree.root_node.named_descendant_for_byte_range(byte_offset - 1, byte_offset - 1)
    while node is not None and not _is_scope(node):
        node = node.parent
    if node is None:
        return None
    while node.parent is not None and node.parent.type in _WRAPPERS | _ARROW_HOLDERS:
        node = node.parent
    if node.type in _SCOPES - {"decorated_definition"} and node.parent is not None and node.parent.type == "decorated_definition":
        node = node.parent
    start = _char_offset(data, node.start_byte)
    end = _char_offset(data, node.end_byte)
    return Target(*whole_lines(text, start, end), kind=node.type, name=_name_of(node))


def whole_lines(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen [start, end) to the start of its first line and the end of its last line (the line break
    itself excluded, so a rewrite never merges two lines)."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    if line_end == -1:
        line_end = len(text)
    elif line_end > 0 and text[line_end - 1] == "\r":
        line_end -= 1
    if end > start and end > 0 and text[end - 1] == "\n":  # a selection that already ends at a line break
        line_end = end - 1
    return line_start, max(line_end, line_start)


def find_target(text: str, start: int, end: int, language: str | None, tree=None) -> Target | None:
    """The selection when there is one, else the enclosing scope (None: nothing sensible to act on)."""
    if end > start and text[start:end].strip():
        return Target(start, end, "selection")
    if language is None:
        return None
    return enclosing_scope(text, start, language, tree)
