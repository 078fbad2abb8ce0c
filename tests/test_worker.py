"""The Engine: one worker thread owns the model; the event loop never waits on a forward pass."""

from __future__ import annotations

import asyncio
import threading

import pytest

torch = pytest.importorskip("torch")

from codellama_lsp.config import Settings  # noqa: E402
from codellama_lsp.engine.backend import CancelToken, EngineError, GenerationParams, ModelLoadError  # noqa: E402
from codellama_lsp.engine.worker import Engine  # noqa: E402


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    eng = Engine(Settings(model=str(tiny_model_dir), model_explicit=True, device="cpu"))
    eng.load_sync()
    yield eng
    eng.close()


def prompt(engine) -> list[int]:
    return engine.backend.template.fim_ids("def add(a, b):\n    return a", "\n\nprint(add(1, 2))\n", mode="spm")


async def test_load_reports_progress_on_the_event_loop(tiny_model_dir):
    eng = Engine(Settings(model=str(tiny_model_dir), model_explicit=True, device="cpu"))
    seen: list[tuple[int, str, bool]] = []
    main = threading.current_thread()
    try:
        await eng.load(lambda pct, msg: seen.append((pct, msg, threading.current_thread() is main)))
        await asyncio.sleep(0)  # let the last call_soon_threadsafe callbacks run
        assert eng.ready and eng.error is None
        assert eng.info.family == "codellama" and eng.info.device == "cpu"
        assert seen and seen[-1][0] == 100 and all(on_loop for *_, on_loop in seen)
        assert [p for p, *_ in seen] == sorted(p for p, *_ in seen)
    finally:
        eng.close()
    assert not eng.worker_thread.is_alive()


async def test_model_is_touched_only_by_the_worker_thread(engine):
    threads: set[int] = set()
    handle = engine.backend.model.register_forward_pre_hook(lambda *_: threads.add(threading.get_ident()))
    try:
        ids = prompt(engine)
        await engine.warm(ids[:-3])
        result = await engine.generate(ids, GenerationParams(max_new_tokens=5))
        assert result.stats.generated_tokens == 5 and result.stats.reused_tokens == len(ids) - 3
        await asyncio.to_thread(engine.generate_sync, ids, GenerationParams(max_new_tokens=3))
    finally:
        handle.remove()
    assert threads == {engine.worker_thread.ident}


async def test_generate_does_not_block_the_event_loop_and_cancels(engine):
    """The loop reacts to the first streamed piece while the worker is still generating, then cancels it."""
    loop = asyncio.get_running_loop()
    first_piece = asyncio.Event()
    cancel = CancelToken()
    pieces: list[str] = []

    def on_text(piece: str) -> None:  # worker thread
        pieces.append(piece)
        loop.call_soon_threadsafe(first_piece.set)

    params = GenerationParams(max_new_tokens=100_000, time_budget_s=60, speculation="none")
    task = asyncio.ensure_future(engine.generate(prompt(engine), params, cancel, on_text))
    await first_piece.wait()
    assert not task.done()
    cancel.cancel()
    result = await task
    assert result.stats.stop_reason == "cancelled"
    assert result.stats.generated_tokens <= len(pieces) + 2


async def test_worker_death_is_reported_and_a_new_thread_takes_over(engine):
    before = engine.worker_thread

    def die() -> None:
        raise SystemExit("native library called exit")

    with pytest.raises(EngineError, match="worker thread died"):
        await engine.run(die)
    assert "restarted" in (engine.error or "")
    assert engine.worker_thread is not before and engine.worker_thread.is_alive()
    result = await engine.generate(prompt(engine), GenerationParams(max_new_tokens=3))
    assert result.stats.generated_tokens == 3
    engine.error = None


async def test_out_of_memory_retries_once_with_a_rebuilt_prompt(engine, monkeypatch):
    """The retry after an out-of-memory gets the prompt the caller rebuilds under a smaller budget, with the
    FIM layout intact (slicing the ids in half used to cut <PRE>/<SUF>); without a rebuilder, the same prompt
    once more after the memory was freed; a second failure is one clear line."""
    backend = engine.backend
    real = backend.generate
    calls: list[list[int]] = []

    def oom_for_long_prompts(ids, params, cancel=None, on_text=None):
        calls.append(list(ids))
        if len(ids) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(ids, params, cancel, on_text)

    monkeypatch.setattr(backend, "generate", oom_for_long_prompts)
    template = backend.template
    suffix = "\n\nprint(add(1, 2))\n"
    ids = template.fim_ids("x = 1\n" * 40 + "def add(a, b):\n    return a", suffix, mode="spm")
    rebuilt = template.fim_ids("def add(a, b):\n    return a", suffix, mode="spm")
    limit = len(rebuilt)
    result = await engine.generate(ids, GenerationParams(max_new_tokens=2), smaller=lambda: rebuilt)
    assert result.stats.generated_tokens == 2
    assert calls[-2:] == [ids, rebuilt]
    layout = [t for t in ids if t >= 32000 or t == 1]  # BOS and the FIM control tokens, in order
    assert len(layout) >= 3 and [t for t in calls[-1] if t >= 32000 or t == 1] == layout
    calls.clear()
    with pytest.raises(EngineError, match="out of memory") as err:
        await engine.generate(ids, GenerationParams(max_new_tokens=2))
    assert calls == [ids, ids] and "\n" not in str(err.value)
    limit = 0
    with pytest.raises(EngineError, match="out of memory"):
        await engine.generate(ids, GenerationParams(max_new_tokens=2), smaller=lambda: rebuilt)
    engine.error = None


async def test_failed_load_keeps_a_one_line_error(tmp_path):
    eng = Engine(Settings(model=str(tmp_path / "missing"), model_explicit=True))
    try:
        with pytest.raises(ModelLoadError, match="does not exist"):
            await eng.load()
        assert not eng.ready and "does not exist" in eng.error
        with pytest.raises(EngineError, match="does not exist"):
            await eng.generate([1, 2, 3], GenerationParams(max_new_tokens=1))
    finally:
        eng.close()


async def test_reload_replaces_the_model(tiny_model_dir):
    eng = Engine(Settings(model=str(tiny_model_dir), model_explicit=True))
    try:
        await eng.load()
        first = eng.backend
        await eng.reload(Settings(model=str(tiny_model_dir), model_explicit=True, kv_cache="quantized"))
        assert eng.backend is not first and eng.backend.kv.kv_cache == "quantized" and first.model is None
    finally:
        eng.close()
