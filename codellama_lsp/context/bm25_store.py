"""The BM25 windows of the workspace on disk, so that a restart does not re-read and re-split every file.

Splitting every indexed file into term windows is most of a cold index's time (the tag queries are the rest,
and the index's own cache already saves those). The retriever's windows are written here when the index is built
and when the server stops, with each file's (mtime_ns, size) as it was read; on the next start the retriever loads
them whole and re-reads only the files whose key no longer matches (see ``Retriever``).

One file per set of workspace roots: a magic line, a JSON header (paths, keys, terms, section sizes), the window
and posting arrays as raw bytes, and a CRC-32 of everything before it. Any mismatch (truncated, corrupt, another
format or byte order) raises ``StoreError``: the caller logs one line and builds from the files as on a cold
start. The writer refuses a store bigger than its limit (and removes an older one), so the disk use is bounded
by about the index's own memory budget. Only terms and counts are stored (of the redacted text), never source.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from array import array
from pathlib import Path
from typing import Any

MAGIC = b"codellama-lsp bm25\n"
FORMAT = 1
_SECTIONS = (("win_path", "I"), ("win_start", "I"), ("win_end", "I"), ("win_len", "I"), ("term_counts", "I"),
             ("post_ids", "I"), ("post_tfs", "H"))


class StoreError(Exception):
    """The store exists but cannot be used (corrupt, truncated, another format)."""


def encode(state: dict[str, Any]) -> bytes:
    """The bytes of a store for ``state`` (as ``BM25Windows.export_state`` gives it)."""
    header = {"format": FORMAT, "byteorder": sys.byteorder, "window_lines": state["window_lines"],
              "stride": state["stride"], "paths": state["paths"], "keys": state["keys"], "terms": state["terms"],
              "sizes": {}}
    blobs = []
    for name, code in _SECTIONS:
        data = state[name]
        raw = data.astype({"I": "uint32", "H": "uint16"}[code]).tobytes() if hasattr(data, "astype") \
            else array(code, data).tobytes()
        header["sizes"][name] = len(raw)
        blobs.append(raw)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    body = MAGIC + struct.pack("<Q", len(head)) + head + b"".join(blobs)
    return body + struct.pack("<I", zlib.crc32(body))


def decode(data: bytes) -> dict[str, Any]:
    """The state stored in ``data``; raises ``StoreError`` when it is not a whole, valid store."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 12:
        raise StoreError("not a store (bad magic or too short)")
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(memoryview(data)[:-4]) != crc:
        raise StoreError("checksum mismatch (truncated or corrupt)")
    pos = len(MAGIC)
    (head_len,) = struct.unpack("<Q", data[pos:pos + 8])
    pos += 8
    try:
        header = json.loads(data[pos:pos + head_len].decode("utf-8"))
    except ValueError as exc:
        raise StoreError(f"bad header ({exc})") from None
    pos += head_len
    if header.get("format") != FORMAT or header.get("byteorder") != sys.byteorder:
        raise StoreError(f"another format ({header.get('format')}, {header.get('byteorder')})")
    state: dict[str, Any] = {k: header.get(k) for k in ("window_lines", "stride", "paths", "keys", "terms")}
    view = memoryview(data)
    try:
        for name, code in _SECTIONS:
            size = int(header["sizes"][name])
            arr = array(code)
            if size % arr.itemsize or pos + size > len(data) - 4:
                raise StoreError(f"section {name} does not fit")
            arr.frombytes(view[pos:pos + size])
            state[name] = arr
            pos += size
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"bad sections ({exc})") from None
    if pos != len(data) - 4:
        raise StoreError("trailing bytes")
    paths, keys, terms = state["paths"], state["keys"], state["terms"]
    if not (isinstance(paths, list) and isinstance(keys, list) and isinstance(terms, list)
            and len(paths) == len(keys) and len(state["term_counts"]) == len(terms)
            and len(state["win_path"]) == len(state["win_start"]) == len(state["win_end"]) == len(state["win_len"])
            and len(state["post_ids"]) == len(state["post_tfs"]) == sum(state["term_counts"])
            and _below(state["win_path"], len(paths)) and _below(state["post_ids"], len(state["win_path"]))):
        raise StoreError("inconsistent sizes")
    return state


def _below(values: array, bound: int) -> bool:
    import numpy as np

    return not len(values) or int(np.frombuffer(values, dtype=np.uint32).max()) < bound


def load(path: Path) -> dict[str, Any] | None:
    """The stored state, or None when there is no store; ``StoreError`` when there is one but it is unusable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"unreadable ({exc})") from None
    try:
        return decode(data)
    except (OverflowError, MemoryError, struct.error) as exc:
        raise StoreError(f"bad store ({exc})") from None


def save(path: Path, state: dict[str, Any], limit_bytes: int) -> int:
    """Write the store atomically; returns its size, or -1 when it would exceed ``limit_bytes`` (then any older
    store is removed, so a stale one is never read instead)."""
    data = encode(state)
    if len(data) > limit_bytes:
        try:
            path.unlink()
        except OSError:
            pass
        return -1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)
