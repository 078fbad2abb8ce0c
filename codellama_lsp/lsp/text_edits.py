"""LSP TextEdits and WorkspaceEdits from ``features.edits`` replacements (character offsets).

Positions come from ``lsp.ranges`` (the one converter), so an edit lands exactly where the range a code
action read said it would, whatever the line ends or the client's position encoding.
"""

from __future__ import annotations

from lsprotocol import types as lsp

from ..features.edits import Replacement, append_replacement, apply_replacements, diff_replacements
from . import ranges


def text_edits(text: str, replacements: list[Replacement], encoding: str = "utf-16") -> list[lsp.TextEdit]:
    """LSP TextEdits for replacements computed against ``text`` (all positions refer to ``text`` as it is
    before any edit, which is what LSP requires of the edits of one TextDocumentEdit)."""
    return [lsp.TextEdit(range=ranges.to_range(text, r.start, r.end, encoding), new_text=r.new_text)
            for r in replacements]


def minimal_edits(text: str, rng: lsp.Range, new_text: str, encoding: str = "utf-16") -> list[lsp.TextEdit]:
    """The TextEdits that turn the text of ``rng`` into ``new_text`` and touch nothing outside ``rng``."""
    start, end = ranges.offsets(text, rng, encoding)
    return text_edits(text, diff_replacements(text, start, end, new_text), encoding)


def apply_edits(text: str, edits: list[lsp.TextEdit], encoding: str = "utf-16") -> str:
    """Apply non-overlapping TextEdits (positions relative to ``text``) — what an editor does."""
    return apply_replacements(text, [Replacement(*ranges.offsets(text, e.range, encoding), e.new_text) for e in edits])


def append_edit(text: str, addition: str, encoding: str = "utf-16") -> lsp.TextEdit:
    """Append ``addition`` at the end of ``text``, separated from what is there by one blank line."""
    (edit,) = text_edits(text, [append_replacement(text, addition)], encoding)
    return edit


def document_edit(
    uri: str, version: int | None, edits: list[lsp.TextEdit], *, document_changes: bool
) -> lsp.WorkspaceEdit:
    """One document's edits as a WorkspaceEdit. With ``document_changes`` (the client supports it) the
    edit carries the document version, so the editor itself refuses it if the buffer moved on."""
    if document_changes:
        return lsp.WorkspaceEdit(
            document_changes=[
                lsp.TextDocumentEdit(
                    text_document=lsp.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
                    edits=list(edits),
                )
            ]
        )
    return lsp.WorkspaceEdit(changes={uri: list(edits)})


def create_file_edit(uri: str, content: str) -> lsp.WorkspaceEdit:
    """Create ``uri`` and fill it with ``content`` (needs documentChanges + the "create" resource
    operation on the client)."""
    return lsp.WorkspaceEdit(
        document_changes=[
            lsp.CreateFile(uri=uri, options=lsp.CreateFileOptions(overwrite=False, ignore_if_exists=True)),
            lsp.TextDocumentEdit(
                text_document=lsp.OptionalVersionedTextDocumentIdentifier(uri=uri, version=None),
                edits=[lsp.TextEdit(range=lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)), new_text=content)],
            ),
        ]
    )
