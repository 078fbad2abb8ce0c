"""The llama.cpp model step: one llama.cpp context, driven through llama-cpp-python's low-level API.

Why the low-level API and not ``Llama.generate``: our decode loop (cache reuse by common prefix, cancel at the
next token, the token-healing mask, prompt-lookup drafts verified in one pass) needs to feed token ids at
chosen positions, read the logits of several positions of one batch, and crop the cache; ``Llama`` offers
none of that without re-tokenizing or re-evaluating. What is used (llama-cpp-python 0.3.36):

* a ``llama_batch`` filled with ids, positions, sequence 0 and a logits flag per position; ``llama_decode``;
  ``llama_get_logits_ith`` for each flagged position (copied into a numpy array: the loop's rows);
* ``llama_memory_seq_rm(mem, 0, keep, -1)`` to crop to the common prefix or drop rejected drafts;
* ``llama_set_abort_callback`` around long prefills only (a Python callback costs 12-40 % of decode speed
  when left on): a cancel stops the prefill within milliseconds; the ubatches already done stay in the cache,
  ``llama_memory_seq_pos_max`` says how far, and the next request reuses them like any other prefix.

Draft trees: every branch of the tree (a leaf and its ancestors) is its own sequence id in a unified KV
buffer (``kv_unified``: sequences share cells, so tagging the cached prompt with a branch's id copies nothing).
A node carries the ids of every branch through it, so it attends to the prompt, its ancestors and itself only,
at the position its depth gives. After the pass the accepted branch becomes sequence 0 again
(``llama_memory_seq_cp``) and the other ids are dropped (``llama_memory_seq_rm``). Off by default
(``LlamaCppStep(trees=True)`` turns them on, tested for identity): on this 2-core CPU a verify pass of up to
16 nodes costs more than the extra accepted tokens save (typing replay on the demo, same run: decode 2.36 ms
per token with trees vs 1.34 with straight drafts; 1.54 vs 1.47 tokens per forward pass), so the loop
proposes straight drafts.
The context is owned by the engine's single worker thread; nothing here is thread-safe.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import named
from .backend import EngineError, ModelLoadError
from .draft_tree import DraftTree
from .step import TREE_NODES, Cancelled, ModelStep

ABORTABLE_PREFILL = 64  # prefills at least this long run with the abort callback installed
# Tokens llama.cpp computes per graph (its physical batch, n_ubatch). The abort callback runs between graph
# nodes, so a smaller graph stops a cancelled prefill sooner; on this CPU 128 prefills as fast as 512
# (demo: 3,800-4,200 tok/s for all three sizes; SmolLM2: within noise).
UBATCH = 128
TREE_SEQS = TREE_NODES  # sequence ids for draft-tree branches: a tree of TREE_NODES nodes has at most as many leaves
_log_lines: list[str] = []  # llama.cpp's recent warnings/errors, for one-line load errors
_log_callback: Any = None


def import_llama_cpp() -> Any:
    """``llama_cpp``, or a ModelLoadError saying how to install it."""
    try:
        llama_cpp = _low_level_module()
    except ImportError:
        raise ModelLoadError(
            "GGUF models need llama-cpp-python: run `pip install \"codellama-lsp[gguf]\"` (it compiles llama.cpp, "
            "about 15 minutes on 2 cores; see README, \"GGUF models\"), or use a transformers model directory"
        ) from None
    except Exception as exc:  # a broken native library raises OSError/RuntimeError on import
        raise ModelLoadError(f"llama-cpp-python is installed but does not load ({named(exc)}); reinstall it") from None
    return llama_cpp


def _low_level_module() -> Any:
    """``llama_cpp.llama_cpp`` (the ctypes bindings of ``llama.h``) without running the package's
    ``__init__``, which also imports the high-level ``Llama`` class, its chat formats, jinja2 and numpy
    (0.1-0.9 s on a 2-core CPU; the first `complete` waits for it). The package is stood in for by an
    unexecuted module only while the submodule loads, then removed, so a later ``import llama_cpp`` anywhere
    runs the real ``__init__``, which picks up the same, already loaded bindings."""
    import importlib
    import importlib.util
    import sys

    if "llama_cpp" in sys.modules:  # imported already (or blocked: None), the usual way
        if sys.modules["llama_cpp"] is None:
            raise ImportError("llama_cpp is blocked")
        return importlib.import_module("llama_cpp.llama_cpp")
    loaded = sys.modules.get("llama_cpp.llama_cpp")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("No module named 'llama_cpp'")
    stand_in = importlib.util.module_from_spec(spec)  # a package with its __path__, __init__ not run
    sys.modules["llama_cpp"] = stand_in
    try:
        return importlib.import_module("llama_cpp.llama_cpp")
    finally:
        if sys.modules.get("llama_cpp") is stand_in:
            del sys.modules["llama_cpp"]


def _quiet_logs(llama_cpp: Any) -> None:
    """Keep llama.cpp's log off stderr (it writes hundreds of lines per load); remember errors and warnings."""
    global _log_callback
    if _log_callback is not None:
        return

    def on_log(level: int, text: bytes, _data: Any) -> None:
        if level in (3, 4):  # GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR
            line = (text or b"").decode("utf-8", "replace").strip()
            if line:
                _log_lines.append(line)
                del _log_lines[:-20]

    _log_callback = llama_cpp.llama_log_callback(on_log)
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def last_log_error() -> str:
    """What llama.cpp said went wrong: its "error loading model: ..." reason when there is one."""
    for line in reversed(_log_lines):
        if "error loading model:" in line:
            return line.split("error loading model:", 1)[1].strip()
    return _log_lines[-1] if _log_lines else ""


def default_threads() -> int:
    """All cores but one (the editor, the server's event loop and the OS need one), at least one."""
    return max(1, (os.cpu_count() or 2) - 1)


class LlamaCppModel:
    """A loaded GGUF model (weights), shared by the contexts made from it."""

    def __init__(self, path: str | Path, *, n_gpu_layers: int = 0) -> None:
        self.lib = import_llama_cpp()
        lib = self.lib
        _quiet_logs(lib)
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = int(n_gpu_layers)
        _log_lines.clear()
        self.path = Path(path)
        model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise ModelLoadError(load_failure_message(self.path))
        self.model = model
        self.vocab = lib.llama_model_get_vocab(model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(lib.llama_model_n_ctx_train(model))

    def describe(self) -> str:
        buf = ctypes.create_string_buffer(256)
        self.lib.llama_model_desc(self.model, buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def size_bytes(self) -> int:
        return int(self.lib.llama_model_size(self.model))

    def close(self) -> None:
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None


def load_failure_message(path: Path) -> str:
    """One line for a GGUF file llama.cpp refused: what it said, and what to do."""
    from .gguf_file import architecture, read_metadata

    meta = read_metadata(path)  # raises its own one-line error for truncated/corrupt metadata
    said = last_log_error()
    arch = architecture(meta)
    if "unknown model architecture" in said or "unsupported" in said.lower():
        return f"{path}: llama.cpp does not support the model architecture '{arch}'; use a Llama-family GGUF"
    if "out of memory" in said.lower() or "failed to allocate" in said.lower():
        return f"out of memory loading {path}; use a smaller quantization (e.g. Q4_K_M) or a smaller model"
    if any(k in said.lower() for k in ("file bounds", "truncated", "failed to read", "corrupted", "incomplete")):
        return f"{path} is truncated or corrupt (llama.cpp: {said}); re-download the GGUF file"
    detail = f" (llama.cpp: {said})" if said else ""
    return f"llama.cpp could not load {path}{detail}; check that it is a complete GGUF of a supported architecture"


class LlamaCppStep(ModelStep):
    """:class:`~codellama_lsp.engine.step.ModelStep` over one llama.cpp context (sequence 0). It owns the
    model it is given: ``close`` frees both."""

    runtime = "llamacpp"

    def __init__(self, model: LlamaCppModel, *, n_ctx: int = 4096, n_threads: int = 0, n_batch: int = 512,
                 n_ubatch: int = UBATCH, trees: bool = False) -> None:
        super().__init__()
        lib = model.lib
        self.lib, self.model = lib, model
        params = lib.llama_context_default_params()
        params.n_ctx = int(n_ctx)
        params.n_batch = int(n_batch)
        params.n_ubatch = min(int(n_ubatch or n_batch), int(n_batch))
        self.trees = bool(trees)
        params.n_seq_max = TREE_SEQS if trees else 1
        params.kv_unified = self.trees  # one KV buffer for all sequences: branches share the prompt's cells
        threads = int(n_threads) or default_threads()
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        # as llama-cpp-python's Llama does by default; on a CPU flash attention does not pay for short contexts
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        _log_lines.clear()
        ctx = lib.llama_init_from_model(model.model, params)
        if not ctx:
            said = last_log_error()
            raise ModelLoadError(f"llama.cpp could not create a context of {n_ctx} tokens for {model.path}"
                                 f"{f' (llama.cpp: {said})' if said else ''}; lower the `context_tokens` setting")
        self.ctx = ctx
        self.mem = lib.llama_get_memory(ctx)
        self.n_ctx = int(lib.llama_n_ctx(ctx))
        self.n_batch = int(n_batch)
        self.n_threads = threads
        self.n_vocab = model.n_vocab
        self._batch = lib.llama_batch_init(self.n_batch, 0, TREE_SEQS if trees else 1)
        self._branch_seqs: list[list[int]] = []  # per row of the last tree pass, the sequence ids it was fed in
        self._branches = 0  # sequence ids 1.. still tagged by the last tree pass
        batch = self._batch
        # the batch's arrays, looked up once (a ctypes attribute read per token adds up); every token is in
        # sequence 0 only, so those two arrays are filled once here
        self._tokens, self._pos, self._flags = batch.token, batch.pos, batch.logits
        for i in range(self.n_batch):
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
        self._llama_decode, self._logits_ith = lib.llama_decode, lib.llama_get_logits_ith
        # One token at the next position of sequence 0, logits out: ``llama_batch_get_one`` over a 1-element
        # array, made once. llama.cpp fills in the position and sequence itself, and that batch decodes
        # faster than the same token in an explicit batch (SmolLM2, 1 thread: ~0.5 ms of ~12 ms per token).
        self._one = (ctypes.c_int32 * 1)()
        self._one_batch = lib.llama_batch_get_one(self._one, 1)
        self._row_bytes = self.n_vocab * 4
        self._check: Callable[[], None] | None = None
        self._stopped: Cancelled | None = None
        self._abort = lib.ggml_abort_callback(self._should_abort)
        self._no_abort = lib.ggml_abort_callback()  # NULL: no callback while decoding token by token

    def holds(self, settings: Any) -> bool:
        """Whether this context is as large as one made for ``settings`` would be (``llamacpp.context_size``): a
        larger ``context_tokens`` needs a new context, which means loading again; a smaller one fits."""
        from .llamacpp import context_size

        return context_size(settings, self.model.n_ctx_train) <= self.n_ctx

    # -- ModelStep ------------------------------------------------------------------------------------------

    def _new_cache(self) -> Any:
        self.lib.llama_memory_clear(self.mem, True)
        self._branches = 0
        return self.ctx

    def reset_cache(self) -> None:
        if self.ctx:
            self.lib.llama_memory_clear(self.mem, True)
        self._branches = 0
        super().reset_cache()

    def _crop(self, keep: int) -> None:
        self.lib.llama_memory_seq_rm(self.mem, 0, keep, -1)
        self._drop_branches()

    @property
    def tree_ready(self) -> bool:
        return self.trees

    def forward_tree(self, last: int, tree: DraftTree) -> np.ndarray:
        """One pass over ``last`` and the tree's nodes, each branch (leaf to root) in its own sequence; sequence
        0 is the branch of first children, so a straight accepted prefix is a plain crop of sequence 0."""
        if not self.trees:
            raise RuntimeError("draft trees need a context made with trees=True")
        n, base = len(tree) + 1, len(self.ids)
        if base + n > self.n_ctx or n > self.n_batch:
            return self.forward([last, *tree.tokens], n)  # raises the one-line "does not fit" error
        parent = [-1] + [p + 1 for p in tree.parents]  # by row
        children: list[list[int]] = [[] for _ in range(n)]
        for row in range(1, n):
            children[parent[row]].append(row)
        first = 0
        while children[first]:
            first = children[first][0]
        leaves = [first] + [row for row in range(n) if not children[row] and row != first]
        if len(leaves) > TREE_SEQS:
            raise ValueError(f"a draft tree with {len(leaves)} leaves (at most {TREE_SEQS})")
        seqs: list[list[int]] = [[] for _ in range(n)]
        for seq, leaf in enumerate(leaves):
            row = leaf
            while row >= 0:
                seqs[row].append(seq)
                row = parent[row]
        lib, mem, batch = self.lib, self.mem, self._batch
        for seq in range(1, len(leaves)):
            lib.llama_memory_seq_cp(mem, 0, seq, -1, -1)  # the cached prompt, visible to this branch too
        self._branches = len(leaves) - 1
        depths = tree.depths()
        n_seq, seq_id = batch.n_seq_id, batch.seq_id
        for row, token in enumerate([last, *tree.tokens]):
            self._tokens[row], self._pos[row], self._flags[row] = token, base + depths[row], 1
            n_seq[row] = len(seqs[row])
            for j, seq in enumerate(seqs[row]):
                seq_id[row][j] = seq
        batch.n_tokens = n
        try:
            rc = self._llama_decode(self.ctx, batch)
        finally:
            for row in range(n):
                n_seq[row] = 1
                seq_id[row][0] = 0
        if rc != 0:
            said = last_log_error()
            raise RuntimeError(f"llama_decode failed with status {rc} on a draft tree" + (f" ({said})" if said else ""))
        self.ids.extend([last, *tree.tokens])
        self._branch_seqs = seqs
        rows = np.empty((n, self.n_vocab), dtype=np.float32)
        address, row_bytes = rows.__array_interface__["data"][0], self._row_bytes
        for row in range(n):
            ctypes.memmove(address + row * row_bytes, self._logits_ith(self.ctx, row), row_bytes)
        return rows

    def _gather(self, base: int, rows: list[int]) -> None:
        """The accepted path lies on one branch (the lowest sequence id through its last row): that branch's
        cells become sequence 0's, cut after the path."""
        seq = min(self._branch_seqs[rows[-1]])
        lib, mem = self.lib, self.mem
        if seq != 0:
            lib.llama_memory_seq_rm(mem, 0, base + 1, -1)
            lib.llama_memory_seq_cp(mem, seq, 0, base + 1, -1)
        lib.llama_memory_seq_rm(mem, 0, base + 1 + len(rows), -1)
        self._drop_branches()

    def keep_rows(self, base: int, rows: Sequence[int]) -> None:
        super().keep_rows(base, rows)
        self._drop_branches()  # also when the whole path was kept (no crop)

    def _drop_branches(self) -> None:
        for seq in range(1, self._branches + 1):
            self.lib.llama_memory_seq_rm(self.mem, seq, -1, -1)
        self._branches = 0

    def forward(self, ids: Sequence[int], logits_to_keep: int = 1) -> np.ndarray:
        ids = list(ids)
        if len(self.ids) + len(ids) > self.n_ctx:
            raise EngineError(f"the prompt ({len(self.ids) + len(ids)} tokens) does not fit the llama.cpp context "
                                 f"of {self.n_ctx}; lower the `context_tokens` setting")
        rows = np.empty((logits_to_keep, self.n_vocab), dtype=np.float32)
        address, row_bytes = rows.__array_interface__["data"][0], self._row_bytes
        first_kept, kept = len(ids) - logits_to_keep, 0
        for start in range(0, len(ids), self.n_batch):
            chunk = ids[start : start + self.n_batch]
            flags = [start + i >= first_kept for i in range(len(chunk))]
            self._decode(chunk, flags)
            for i, flag in enumerate(flags):
                if flag:  # one copy out of llama.cpp's buffer, which the next decode overwrites
                    ctypes.memmove(address + kept * row_bytes, self._logits_ith(self.ctx, i), row_bytes)
                    kept += 1
        return rows

    def decode_one(self, token: int) -> np.ndarray:
        """``forward([token], 1)[-1]`` without its generality: the per-token path of the decode loop, where
        Python's own cost is compared with llama.cpp's (bench/runtimes.py: our loop's overhead)."""
        base = len(self.ids)
        if base + 1 > self.n_ctx:
            return self.forward([token], 1)[-1]  # raises the one-line "does not fit" error
        self._one[0] = token
        rc = self._llama_decode(self.ctx, self._one_batch)
        if rc != 0:
            self._failed(rc, [token], base)
        self.ids.append(token)
        row = np.empty(self.n_vocab, dtype=np.float32)
        ctypes.memmove(row.__array_interface__["data"][0], self._logits_ith(self.ctx, -1), self._row_bytes)
        return row

    def prefill(self, ids: Sequence[int], check: Callable[[], None] = lambda: None) -> Any:
        """Short runs as one forward; long ones with the abort callback installed, so that ``check`` stops them
        inside a batch. After a stop, the cache covers whatever llama.cpp finished (``ids`` says how much)."""
        ids = list(ids)
        if not ids:
            return None
        check()
        if len(ids) < ABORTABLE_PREFILL:
            return self.forward(ids, 1)[-1]
        self._check, self._stopped = check, None
        self.lib.llama_set_abort_callback(self.ctx, self._abort, ctypes.c_void_p(0))
        try:
            return self.forward(ids, 1)[-1]
        finally:
            self.lib.llama_set_abort_callback(self.ctx, self._no_abort, ctypes.c_void_p(0))
            self._check = None

    def nbytes(self) -> int:
        return int(self.lib.llama_state_seq_get_size(self.ctx, 0)) if self.ctx and self.ids else 0

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self.lib.llama_batch_free(self._batch)
            self.lib.llama_free(self.ctx)
            self.ctx = None
        self.model.close()
        self.cache = None
        self.ids = []

    # -- llama.cpp ------------------------------------------------------------------------------------------

    def _should_abort(self, _data: Any) -> bool:
        check = self._check
        if check is None:
            return False
        try:
            check()
        except Cancelled as stop:
            self._stopped = stop
            return True
        return False

    def _decode(self, chunk: list[int], flags: list[bool]) -> None:
        batch, base, n = self._batch, len(self.ids), len(chunk)
        token, pos, logits = self._tokens, self._pos, self._flags
        for i, t in enumerate(chunk):
            token[i] = t
            pos[i] = base + i
            logits[i] = flags[i]
        batch.n_tokens = n
        rc = self._llama_decode(self.ctx, batch)
        if rc == 0:
            self.ids.extend(chunk)
            return
        self._failed(rc, chunk, base)

    def _failed(self, rc: int, chunk: list[int], base: int) -> None:
        """After ``llama_decode`` returned ``rc`` != 0 for ``chunk`` fed at ``base``: keep what it finished,
        then raise (``Cancelled`` for an abort)."""
        n = len(chunk)
        if rc == 2 or rc < -1:  # aborted (or failed) part-way: the finished ubatches stay in the cache
            done = int(self.lib.llama_memory_seq_pos_max(self.mem, 0)) + 1
            done = max(base, min(done, base + n))
            self.ids.extend(chunk[: done - base])
            self.lib.llama_memory_seq_rm(self.mem, 0, len(self.ids), -1)
            if rc == 2:
                stop, self._stopped = self._stopped, None
                raise stop or Cancelled("cancelled")
        said = last_log_error()
        raise RuntimeError(f"llama_decode failed with status {rc}" + (f" ({said})" if said else ""))
