"""Chat over LSP: the ``codellama/chat`` request, streamed as ``codellama/chatChunk`` notifications.

Chunks are ``{conversationId, seq, text}`` and the response is ``{conversationId, text, ...}`` where ``text``
is exactly the concatenation of the chunks, so a client may render the stream or only the final answer.
``$/cancelRequest`` stops decoding at the next token. The chat itself (prompts, history, streaming) is
``features/chat.py``'s; here are only the params, the document context in client positions, and the errors.
"""

from __future__ import annotations

import asyncio
import uuid

from lsprotocol import types as lsp

from ..engine.backend import CancelToken
from ..errors import ParamsError, first_line
from ..features.chat import ChatEngines, ChatError, ChatParamsError, ChatService, CodeContext, OnChunk
from ..features.targets import enclosing_scope, language_name
from . import ranges
from .errors import jsonrpc_error
from .params import converter, plain

CHAT_REQUEST = "codellama/chat"
CHAT_CHUNK = "codellama/chatChunk"
MAX_OPEN_DOCUMENTS = 50  # open documents a question may draw repository context from


def document_context(server, uri: str, rng: dict | None, *, widen_to_scope: bool = False) -> CodeContext:
    """A CodeContext for an open document (or a file on disk) and an LSP range in client units."""
    document = server.workspace.get_text_document(uri)
    try:
        text = document.source
    except OSError as exc:
        raise ChatError(f"cannot read {uri}: {exc.strerror or exc}") from exc
    path = document.path or uri
    language = language_name(document.language_id or "", path)
    if rng:
        try:
            start, end = ranges.offsets(text, converter().structure(rng, lsp.Range), ranges.encoding_of(document))
        except Exception as exc:  # cattrs/validation errors of every kind: the client sent a malformed range
            raise ChatParamsError(f"invalid range: {first_line(exc)}") from exc
    else:
        start, end = 0, len(text)
    if widen_to_scope and start == end and language:
        scope = enclosing_scope(text, start, language)
        if scope is not None:
            start, end = scope.start, scope.end
    open_documents = {}
    for doc in list(server.workspace.text_documents.values())[:MAX_OPEN_DOCUMENTS]:
        if doc.uri != uri and doc.path:
            open_documents[doc.path] = doc.source
    return CodeContext(path=path, text=text, start=start, end=end, language=language, open_documents=open_documents)


def service_for(server) -> ChatService:
    """The server's one ChatService, kept up to date with its settings, retriever and engine."""
    service = server.chat_service
    if service is None:
        engines = ChatEngines(server.engine, server.settings)
        service = server.chat_service = ChatService(engines, server.settings, retriever=server.retriever,
                                                    report=server.send_status)
    else:
        # settings and retriever can change after initialize / didChangeConfiguration
        service.settings = service.engines.settings = server.settings
        service.retriever = server.retriever
        service.engines.engine = server.engine
    service.wait_ready = server.wait_ready
    return service


def chunk_sender(server, conversation_id: str) -> OnChunk:
    def send(seq: int, text: str) -> None:
        server.protocol.notify(CHAT_CHUNK, {"conversationId": conversation_id, "seq": seq, "text": text})

    return send


async def run_chat(server, conversation_id: str | None, messages, context: CodeContext | None, **kwargs) -> dict:
    """Ask, stream chunks to the client, answer ``{conversationId, text}``; errors become LSP errors."""
    service = service_for(server)
    conversation_id = conversation_id or uuid.uuid4().hex
    cancel = CancelToken()
    try:
        answer = await service.ask(
            messages,
            conversation_id=conversation_id,
            context=context,
            cancel=cancel,
            on_chunk=chunk_sender(server, conversation_id),
            **kwargs,
        )
    except asyncio.CancelledError:
        cancel.cancel("cancelled")
        raise
    except ChatError as exc:
        raise jsonrpc_error(exc) from exc
    return answer.to_json()


def register(server) -> None:
    """Attach ``codellama/chat`` to ``server``."""

    @server.feature(CHAT_REQUEST)
    async def chat(ls, params) -> dict:
        p = plain(params) or {}
        if not isinstance(p, dict):
            raise jsonrpc_error(ParamsError("codellama/chat takes {messages, textDocument?, range?, conversationId?}"))
        context = None
        document = p.get("textDocument")
        if isinstance(document, dict) and document.get("uri"):
            try:
                context = document_context(ls, document["uri"], p.get("range"))
            except ChatError as exc:
                raise jsonrpc_error(ParamsError(str(exc))) from exc
        conversation_id = p.get("conversationId")
        if conversation_id is not None and not isinstance(conversation_id, str):
            raise jsonrpc_error(ParamsError("conversationId must be a string"))
        return await run_chat(ls, conversation_id, p.get("messages"), context)
