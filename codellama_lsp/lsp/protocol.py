"""The JSON-RPC side of the server: pygls' protocol, made to answer every request.

pygls 2 leaves a request whose params fail to parse unanswered (the client waits forever), logs a traceback
for a message that is not JSON-RPC at all, and logs an error per write once the editor has closed the pipe.
``AnsweringProtocol`` answers such requests with InvalidParams, drops what cannot be answered, and goes quiet
when the client has gone. It is apart from ``server.py`` because none of it is about what the server does:
it is how any message gets in and out.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

log = logging.getLogger(__name__)

PROMPT = "codellama/prompt"


@attrs.define
class PromptRequest:
    """``codellama/prompt``: the prompt (and completion) the model sees at a position."""

    id: int | str = attrs.field()
    params: lsp.TextDocumentPositionParams = attrs.field()
    method: str = PROMPT
    jsonrpc: str = attrs.field(default="2.0")


class _ClientWriter:
    """pygls' writer, quiet once the client has gone: an editor that quits (Neovim's ``:qa!``) closes the
    pipe while answers and notifications are still on their way; each would log an ERROR and a
    ``BrokenPipeError`` traceback. The first failure is logged once (debug) and the rest are dropped."""

    def __init__(self, writer) -> None:
        self._writer = writer
        self.gone = False

    def write(self, data: bytes):
        if self.gone:
            return None
        try:
            return self._writer.write(data)
        except (BrokenPipeError, ConnectionResetError, ValueError) as exc:  # ValueError: write to a closed file
            self.gone = True
            log.debug("the client has gone (%s); nothing more is sent", type(exc).__name__)
            return None

    def close(self):
        try:
            return self._writer.close()
        except (OSError, ValueError):
            return None


@attrs.define
class _Answered:
    """Stands in for a request that was already answered with an error while being parsed."""

    id: int | str
    jsonrpc: str = ""


class AnsweringProtocol(LanguageServerProtocol):
    """pygls' protocol, plus: requests with malformed params get -32602 instead of silence, and
    custom requests can have typed params (``register_request_type``)."""

    custom_types: dict[str, type] = {PROMPT: PromptRequest}

    @classmethod
    def register_request_type(cls, method: str, request_cls: type) -> None:
        """Give a custom method attrs-typed params (see ``PromptRequest`` for the shape)."""
        cls.custom_types[method] = request_cls

    @lsp_method(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: lsp.DidChangeTextDocumentParams):
        """A change to a document that was never opened (Emacs sends one for a file it could not send
        in didOpen, e.g. binary content named ``.py``) is ignored quietly, not an "Error in server" popup."""
        if not self._is_open(params.text_document.uri):
            log.debug("change to a document that is not open ignored: %s", params.text_document.uri)
            return
        yield from super().lsp_text_document__did_change(params)

    @lsp_method(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: lsp.DidCloseTextDocumentParams):
        if not self._is_open(params.text_document.uri):
            log.debug("close of a document that is not open ignored: %s", params.text_document.uri)
            return
        yield from super().lsp_text_document__did_close(params)

    def _is_open(self, uri: str) -> bool:
        from urllib.parse import unquote

        return unquote(uri) in self.workspace.text_documents

    def set_writer(self, writer, include_headers: bool = True):
        return super().set_writer(_ClientWriter(writer), include_headers)

    def get_message_type(self, method: str):
        return self.custom_types.get(method) or super().get_message_type(method)

    def structure_message(self, data: dict[str, Any]):
        try:
            if isinstance(data, dict) and "method" in data and not isinstance(data["method"], str):
                raise JsonRpcInvalidParams("the method is not a string")  # pygls fails on it with a traceback
            return super().structure_message(data)
        except (TypeError, ValueError, KeyError) as exc:  # e.g. unknown member names in a notification
            if isinstance(data, dict) and "method" in data:
                log.warning("malformed message for %r; ignored", str(data.get("method"))[:80])
                if "id" in data and isinstance(data["id"], (int, str)):
                    self._send_response(data["id"], error=JsonRpcInvalidParams(
                        f"Invalid message: {type(exc).__name__}").to_response_error())
                return _Answered(id="")
            raise
        except JsonRpcException as exc:
            is_request = isinstance(data, dict) and "id" in data and "method" in data
            if isinstance(data, dict) and "method" in data and not is_request:  # a notification: drop it
                log.warning("invalid params for notification %s; ignored", data.get("method"))
                return _Answered(id="")
            if not is_request:
                raise
            log.warning("invalid params for %s (request %s)", data.get("method"), data.get("id"))
            message = f"Invalid params for {data.get('method')}"
            if exc.__cause__ is not None:
                message += f": {_describe(exc.__cause__)}"
            self._send_response(data["id"], error=JsonRpcInvalidParams(message).to_response_error())
            return _Answered(id=data["id"])

    def handle_message(self, message):
        if isinstance(message, _Answered):
            return
        if not hasattr(message, "jsonrpc"):  # valid JSON, but not a JSON-RPC message: nothing to answer
            log.warning("ignored a frame that is not a JSON-RPC message (%s)", type(message).__name__)
            return
        try:
            return super().handle_message(message)
        except (TypeError, AttributeError, KeyError, ValueError) as exc:  # e.g. $/cancelRequest {id: [..]}
            log.warning("ignored a malformed %s: %s: %s", getattr(message, "method", "message"),
                        type(exc).__name__, str(exc)[:200])


def _describe(exc: BaseException) -> str:
    """cattrs' nested validation errors as "required field missing @ $.params.context"."""
    try:
        from cattrs import transform_error

        details = transform_error(exc, path="$")
    except Exception:
        details = [str(exc)]
    return "; ".join(details)[:500]
