"""Request params as plain data, and lsprotocol's converter for the few typed pieces inside them.

pygls hands the params of custom requests and command arguments over as namedtuples (``Object``) or attrs
classes; handlers work on JSON-like dicts and lists instead.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=1)
def converter():
    """lsprotocol's cattrs converter, built once: ``get_converter()`` builds a new one on every call
    (~100-400 ms), far too slow for a code-action listing."""
    from lsprotocol.converters import get_converter

    return get_converter()


def plain(value: Any) -> Any:
    """namedtuples, attrs classes, dicts and lists -> JSON-like dicts and lists."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "__attrs_attrs__"):
        return converter().unstructure(value)
    return value
