"""The errors of ``codellama_lsp.errors`` raised as JSON-RPC errors, with the code each one maps to there."""

from __future__ import annotations

from typing import Awaitable, Callable

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException

from ..errors import INVALID_PARAMS, RequestError


def jsonrpc_error(exc: RequestError) -> JsonRpcException:
    """The JSON-RPC error answering a request that failed with ``exc`` (its message, its code)."""
    return JsonRpcException.from_error(lsp.ResponseError(code=exc.code, message=str(exc)))


def guarded_command(run: Callable[..., Awaitable], *, on_failure: Callable | None = None):
    """A ``workspace/executeCommand`` handler running ``run(ls, args)``: a RequestError is answered with its
    code; ``on_failure(ls, exc)`` also tells the user, unless the params were malformed."""

    async def handler(ls, *args):
        try:
            return await run(ls, args)
        except RequestError as exc:
            if on_failure is not None and exc.code != INVALID_PARAMS:
                on_failure(ls, exc)
            raise jsonrpc_error(exc) from exc

    return handler
