"""The requests being answered, keyed by (kind, uri): a newer one of a kind supersedes the older for a document,
an edit or a close cancels every request for that document, a reload or shutdown cancels them all.

Kinds are "inline" and "completion": an editor may send both for one keystroke and both get an answer.
"""

from __future__ import annotations

from ..engine.backend import CancelToken


class InFlight:
    """In-flight requests' cancel tokens. Used on the event loop only."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], CancelToken] = {}

    def start(self, kind: str, uri: str) -> CancelToken:
        """A token for a new request, cancelling ("superseded") the previous one of ``kind`` for ``uri``."""
        key = (kind, uri)
        previous = self._tokens.get(key)
        if previous is not None:
            previous.cancel("superseded")
        token = self._tokens[key] = CancelToken()
        return token

    def finish(self, kind: str, uri: str, token: CancelToken) -> None:
        """The request of ``token`` is answered (a newer one may already have taken its place)."""
        if self._tokens.get((kind, uri)) is token:
            del self._tokens[(kind, uri)]

    def cancel_document(self, uri: str, reason: str) -> None:
        for (_, key_uri), token in list(self._tokens.items()):
            if key_uri == uri:
                token.cancel(reason)

    def cancel_all(self, reason: str) -> None:
        for token in list(self._tokens.values()):
            token.cancel(reason)

    def __bool__(self) -> bool:
        return bool(self._tokens)
