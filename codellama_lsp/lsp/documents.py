"""Open documents as the server keeps them: pygls' workspace, with edits applied by ``positions``' rules.

pygls applies incremental edits with its own line splitting (``str.splitlines``: form feeds, U+2028 and
friends end lines there, not in LSP) and clamps a column past the end of a line one character short. The
document model installed here applies every change through ``positions.apply_change`` instead, and refuses
to read from disk a document the editor never opened when ``readguard`` says it must not be read.
"""

from __future__ import annotations

import errno

from ..positions import apply_change, normalize_encoding


def install_document_model(workspace) -> None:
    """Make a pygls ``Workspace`` apply incremental edits with these rules (LSP line ends, no
    off-by-one clamping) instead of its own; documents opened afterwards use them."""
    from pygls.workspace import TextDocument, Workspace

    class LspTextDocument(TextDocument):
        def _apply_incremental_change(self, change) -> None:
            encoding = normalize_encoding(self.position_codec.encoding)
            r = change.range
            self._source = apply_change(self.source, (r.start.line, r.start.character),
                                        (r.end.line, r.end.character), change.text, encoding)

        refused: str | None = None  # set for unopened documents the server must not read (readguard)

        @property
        def source(self) -> str:
            if self.refused and self._source is None:
                raise PermissionError(errno.EACCES, f"not read: {self.refused}", self.path)
            return super().source

    class LspWorkspace(Workspace):
        def _create_text_document(self, doc_uri, source=None, version=None, language_id=None):
            return LspTextDocument(doc_uri, source=source, version=version, language_id=language_id,
                                   sync_kind=self._sync_kind, position_codec=self._position_codec)

        def get_text_document(self, doc_uri):
            from .readguard import disk_read_refusal

            doc = super().get_text_document(doc_uri)
            if doc._source is None and doc.path:  # not opened by the editor: would be read from disk
                doc.refused = disk_read_refusal(doc.path, self)
            return doc

    if isinstance(workspace, Workspace) and not isinstance(workspace, LspWorkspace):
        workspace.__class__ = LspWorkspace


def fs_path(uri: str) -> str | None:
    """The file a document URI names, or None (not a ``file:`` URI, or one pygls cannot convert)."""
    from pygls.uris import to_fs_path

    try:
        return to_fs_path(uri)
    except Exception:
        return None
