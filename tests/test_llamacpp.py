"""The llama.cpp runtime: our decode loop on llama.cpp against llama.cpp's plainest loop, with real models.

The reference is ``llama_cpp.Llama`` (llama-cpp-python's own high-level object, not our step): a fresh
context, the whole prompt evaluated, one token per ``eval``, greedy argmax. Our path keeps its cache between
calls (crop to the common prefix, prefill the rest), verifies prompt-lookup drafts in one pass, and heals a
partial word. Same runtime, same thread count (one: a single-threaded llama.cpp sums in one fixed order), so
the tokens must be identical. The demo model (converted to GGUF) infills; SmolLM2-135M-Instruct is a real
instruct model.
"""

from __future__ import annotations

import inspect
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from codellama_lsp.config import Settings
from codellama_lsp.engine.backend import CancelToken, GenerationParams, ModelInfo, ModelLoadError
from shared_data import REPO, SMOLLM2_GGUF, needs_smollm2

try:
    import llama_cpp
except ImportError:  # pragma: no cover - the [gguf] extra is not installed
    llama_cpp = None

pytestmark = pytest.mark.skipif(llama_cpp is None, reason="llama-cpp-python is not installed "
                                "(pip install -e \".[gguf]\"; it compiles llama.cpp)")
pytest.importorskip("gguf", reason="the gguf package writes the demo model as GGUF")

SOURCE = inspect.getsource(textwrap)


@pytest.fixture(scope="module")
def demo_path(tmp_path_factory) -> Path:
    from codellama_lsp.engine.gguf_convert import demo_gguf

    return demo_gguf(tmp_path_factory.mktemp("gguf"))


def load(path: Path | str, **overrides):
    from codellama_lsp.engine.draft_tree import TreeBudget
    from codellama_lsp.engine.loading import load_backend
    from codellama_lsp.engine.step import TREE_NODES

    backend = load_backend(Settings(model=str(path), model_explicit=True, n_threads=1, **overrides))
    backend.kv.budget = TreeBudget(most=TREE_NODES, window=10**9)  # outputs never depend on it; counts do
    return backend


@pytest.fixture(scope="module")
def demo(demo_path):
    backend = load(demo_path)
    yield backend
    backend.close()


class Plain:
    """llama.cpp's plainest greedy loop, through llama-cpp-python's own ``Llama`` object."""

    def __init__(self, path: Path) -> None:
        import numpy as np

        self.np = np
        self.llm = llama_cpp.Llama(str(path), n_ctx=4096, n_threads=1, n_threads_batch=1, n_batch=512, verbose=False)
        self.n_vocab = self.llm.n_vocab()

    def logits(self):
        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return self.np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def generate(self, prompt: list[int], max_new: int, stop_ids=(), allowed=None) -> list[int]:
        """``allowed(step, out)``: the token ids permitted at this step (token healing), or None for all."""
        self.llm.reset()
        self.llm.eval(prompt)
        out: list[int] = []
        while True:
            row = self.logits()
            ok = allowed(out) if allowed is not None else None
            if ok is not None:
                masked = self.np.full_like(row, -self.np.inf)
                masked[ok] = row[ok]
                row = masked
            token = int(row.argmax())
            out.append(token)
            if token in stop_ids or len(out) >= max_new:
                return out
            self.llm.eval([token])


@pytest.fixture(scope="module")
def plain(demo_path):
    return Plain(demo_path)


def prompts_while_typing(backend, seed: int = 0) -> list[list[int]]:
    """FIM prompts of a real file at cursor positions that move like typing: forward a few characters, a
    deletion, a jump elsewhere."""
    rng = random.Random(seed)
    out, cursor = [], 600
    for k in range(24):
        if k % 8 == 7:
            cursor = rng.randrange(200, len(SOURCE) - 200)
        elif k % 5 == 4:
            cursor -= rng.randrange(1, 4)
        else:
            cursor += rng.randrange(1, 6)
        prefix, suffix = SOURCE[max(0, cursor - 1500) : cursor], SOURCE[cursor : cursor + 400]
        out.append(backend.template.fim_ids(prefix, suffix, "spm"))
    return out


def test_runtime_and_info(demo):
    assert demo.info.runtime == "llamacpp" and demo.info.fim and demo.info.family == "codellama"
    assert demo.kv.runtime == "llamacpp" and not demo.kv.tree_ready  # straight drafts (see step_llamacpp)


def test_reuse_and_speculation_match_the_plain_llamacpp_loop(demo, plain):
    demo.reset_cache()
    stop = demo.template.fim_stop_ids if hasattr(demo.template, "fim_stop_ids") else []
    reused = drafted = forward = generated = 0
    for ids in prompts_while_typing(demo):
        result = demo.generate(ids, GenerationParams(max_new_tokens=16, stop_token_ids=stop))
        assert result.token_ids == plain.generate(ids, 16, stop_ids=set(stop)), ids[-8:]
        assert demo.kv.ids == (ids + result.token_ids)[: len(demo.kv.ids)]
        reused += result.stats.reused_tokens
        drafted += result.stats.accepted_draft_tokens
        forward += result.stats.forward_passes
        generated += result.stats.generated_tokens
    assert reused > 0 and drafted > 0 and forward < generated


@pytest.fixture(scope="module")
def tree_demo(demo_path):
    """The demo on a llama.cpp step made for draft trees (one sequence id per branch, a unified KV buffer)."""
    from codellama_lsp.engine.gguf_file import load_gguf_tokenizer
    from codellama_lsp.engine.local import LocalBackend
    from codellama_lsp.engine.step_llamacpp import LlamaCppModel, LlamaCppStep
    from codellama_lsp.engine.templates import template_for

    step = LlamaCppStep(LlamaCppModel(demo_path), n_ctx=4096, n_threads=1, trees=True)
    tokenizer = load_gguf_tokenizer(demo_path)
    template = template_for(tokenizer, model_name="demo")
    info = ModelInfo(name="demo", path=str(demo_path), family=template.family, fim=template.fim, device="cpu",
                     dtype="F16", quantization="F16", context_length=4096, runtime="llamacpp")
    backend = LocalBackend(None, tokenizer, template, info, step=step)
    yield backend
    backend.close()


def test_a_draft_tree_verifies_each_branch_as_if_fed_alone_and_keeps_a_side_branch(tree_demo):
    """Two branches after a shared first node: every row's logits match feeding that row's path alone, and
    after keeping the second branch the next token's logits match a cache that only ever saw that path."""
    import numpy as np

    from codellama_lsp.engine.draft_tree import DraftTree

    demo = tree_demo
    step = demo.kv
    assert step.tree_ready
    ids = [1] + demo.encode(SOURCE[:600])
    a, b, c, d = demo.encode("    return lines.join(prefix)")[:4]
    tree = DraftTree(budget=8)
    tree.add_path([a, b, c])
    tree.add_path([a, d, c])  # rows: 1=a, 2=b, 3=c | 4=d, 5=c
    step.reset()
    step.prefill(ids[:-1])
    base = len(step.ids)
    rows = step.forward_tree(ids[-1], tree)

    def alone(path):
        step.reset()
        step.prefill(ids[:-1])
        return step.forward([ids[-1], *path], len(path) + 1)

    first, second = alone([a, b, c]), alone([a, d, c])
    for got, want in ((rows[[0, 1, 2, 3]], first), (rows[[0, 1, 4, 5]], second)):
        assert (got.argmax(-1) == want.argmax(-1)).all()
        assert np.allclose(got, want, atol=2e-2)
    step.reset()
    step.prefill(ids[:-1])
    step.forward_tree(ids[-1], tree)
    step.keep_rows(base, [1, 4, 5])  # a, d, c: the side branch
    assert step.ids == ids + [a, d, c]
    nxt = step.decode_one(c)
    ref = alone([a, d, c, c])[-1]
    assert nxt.argmax() == ref.argmax() and np.allclose(nxt, ref, atol=2e-2)


def test_reuse_and_draft_trees_match_the_plain_llamacpp_loop(tree_demo, plain):
    demo = tree_demo
    demo.reset_cache()
    stop = demo.template.fim_stop_ids if hasattr(demo.template, "fim_stop_ids") else []
    drafted = 0
    for ids in prompts_while_typing(demo)[:40]:
        result = demo.generate(ids, GenerationParams(max_new_tokens=16, stop_token_ids=stop))
        assert result.token_ids == plain.generate(ids, 16, stop_ids=set(stop)), ids[-8:]
        assert demo.kv.ids == (ids + result.token_ids)[: len(demo.kv.ids)]
        drafted += result.stats.accepted_draft_tokens
    assert drafted > 0


def test_token_healing_matches_the_plain_loop_with_the_same_mask(demo, plain):
    """A partial word at the cursor: the healed path (reuse + drafts under the mask) equals the plain loop
    applying the same consistency rule at each step."""
    from codellama_lsp.engine.decode import _after, _consistent

    texts = demo.vocab_texts()
    cut = SOURCE.index("def dedent") + len("def ded")
    for end in (cut, cut + 1, cut + 2):
        heal = SOURCE[end - 4 : end] if SOURCE[end - 4 : end].isidentifier() else SOURCE[end - 1 : end]
        ids = [1] + demo.encode(SOURCE[max(0, end - 1200) : end - len(heal)])
        result = demo.generate(ids, GenerationParams(max_new_tokens=10, heal_prefix=heal))

        def allowed(out, heal=heal):
            rem = heal
            for token in out:
                rem = _after(texts[token], rem) if rem else ""
            return [i for i, t in enumerate(texts) if _consistent(t, rem)] if rem else None

        assert result.token_ids == plain.generate(ids, 10, allowed=allowed)
        assert (heal + result.text).startswith(heal)


def test_cancel_during_decode_stops_at_the_next_token(demo):
    demo.reset_cache()
    ids = [1] + demo.encode(SOURCE[:1200])
    cancel = CancelToken()
    result = demo.generate(ids, GenerationParams(max_new_tokens=40, speculation="none"), cancel=cancel,
                           on_text=lambda piece: cancel.cancel())
    assert result.stats.stop_reason == "cancelled"
    assert demo.decode(result.token_ids[:-1]) == ""  # the token whose text triggered the cancel is the last


class CancelAfterPolls(CancelToken):
    """Cancels itself at the n-th time anything asks whether it is cancelled (deterministic, no threads):
    during a long prefill the asking is llama.cpp's abort callback, between graph nodes."""

    def __init__(self, polls: int) -> None:
        super().__init__()
        self.polls, self.asked = polls, 0

    @property
    def cancelled(self) -> bool:
        self.asked += 1
        if self.asked >= self.polls:
            self.cancel()
        return super().cancelled


def test_cancel_inside_a_long_prefill_keeps_what_finished(demo_path, plain):
    """The abort callback stops llama_decode between graph nodes; the finished ubatches stay cached, and the
    next request reuses them and still answers exactly as the plain loop does."""
    backend = load(demo_path)
    try:
        backend.kv.n_batch = 128  # several ubatches in one prefill (the step reads it per call)
        ids = [1] + backend.encode(SOURCE[:2400])[:599]
        counting = CancelAfterPolls(10**9)
        backend.generate(ids, GenerationParams(max_new_tokens=1, speculation="none"), cancel=counting)
        polls = counting.asked  # how often a whole prefill asks

        backend.reset_cache()
        result = backend.generate(ids, GenerationParams(max_new_tokens=4, speculation="none"),
                                  cancel=CancelAfterPolls(int(polls * 0.6)))
        assert result.stats.stop_reason == "cancelled" and result.token_ids == []
        kept = len(backend.kv.ids)
        assert 0 < kept < len(ids) and kept % 128 == 0, kept  # whole ubatches, not the whole prompt
        assert backend.kv.ids == ids[:kept]

        again = backend.generate(ids, GenerationParams(max_new_tokens=8, speculation="none"))
        assert again.stats.reused_tokens == kept and again.stats.prefill_tokens == len(ids) - kept
        assert again.token_ids == plain.generate(ids, 8)
    finally:
        backend.close()


def test_warm_then_generate_prefills_only_the_change(demo):
    demo.reset_cache()
    ids = [1] + demo.encode(SOURCE[:1500])
    info = demo.warm(ids)
    assert info["prefill_tokens"] == len(ids) and not info["cancelled"]
    result = demo.generate(ids + demo.encode(" x", leading_space=False), GenerationParams(max_new_tokens=4))
    assert result.stats.reused_tokens == len(ids)


def test_sampling_runs_on_numpy_rows(demo):
    ids = [1] + demo.encode(SOURCE[:300])
    params = GenerationParams(max_new_tokens=12, temperature=0.8, top_p=0.9, seed=3)
    first, second = demo.generate(ids, params), demo.generate(ids, params)
    assert first.token_ids == second.token_ids and len(first.token_ids) == 12


def test_fim_prompt_ids_equal_the_transformers_runtime(demo):
    """Same settings, same splits of real files: the llama.cpp runtime (tokenizer rebuilt from the GGUF's
    vocabulary) builds exactly the ids the transformers runtime (the checkpoint's tokenizer.json) builds."""
    from test_templates import make_splits

    from codellama_lsp.engine.loading import DEMO_DIR, read_config
    from codellama_lsp.engine.templates import template_for
    from codellama_lsp.engine.tokenizer import load_tokenizer

    reference = template_for(load_tokenizer(DEMO_DIR), model_name="demo", config=read_config(DEMO_DIR, "demo"))
    assert reference.fim_modes == demo.template.fim_modes
    splits = make_splits(320, seed=15)
    for prefix, _middle, suffix in splits:
        for mode in ("spm", "psm"):
            assert demo.template.fim_ids(prefix, suffix, mode) == reference.fim_ids(prefix, suffix, mode)


# -- failures: one line, never a traceback ------------------------------------------------------------------------


def test_truncated_gguf_is_one_line(tmp_path, demo_path):
    from codellama_lsp.engine.loading import load_backend

    cut = tmp_path / "cut.gguf"
    cut.write_bytes(demo_path.read_bytes()[: demo_path.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as info:
        load_backend(Settings(model=str(cut), model_explicit=True))
    message = str(info.value)
    assert "\n" not in message and "truncated or corrupt" in message and str(cut) in message


def test_unsupported_architecture_is_one_line(tmp_path, demo_path):
    from codellama_lsp.engine.loading import load_backend

    data = demo_path.read_bytes()
    odd = tmp_path / "odd.gguf"
    # same length key value, so the file stays well-formed: "llama" -> "xlama"
    odd.write_bytes(data.replace(b"general.architecture\x08\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00llama",
                                 b"general.architecture\x08\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00xlama", 1))
    assert odd.read_bytes() != data
    with pytest.raises(ModelLoadError) as info:
        load_backend(Settings(model=str(odd), model_explicit=True))
    assert "\n" not in str(info.value) and "'xlama'" in str(info.value)


def test_missing_llama_cpp_is_one_line(monkeypatch, demo_path):
    from codellama_lsp.engine.loading import load_backend

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    with pytest.raises(ModelLoadError, match=r"pip install \"codellama-lsp\[gguf\]\""):
        load_backend(Settings(model=str(demo_path), model_explicit=True))


def test_runtime_settings_that_cannot_work_are_one_line(demo_path, tmp_path):
    from codellama_lsp.engine.loading import DEMO_DIR, load_backend

    with pytest.raises(ModelLoadError, match="transformers runtime does not run"):
        load_backend(Settings(model=str(demo_path), model_explicit=True, runtime="transformers"))
    with pytest.raises(ModelLoadError, match="needs a GGUF model"):
        load_backend(Settings(model=str(DEMO_DIR.parent / "demo"), model_explicit=True, runtime="llamacpp"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_backend(Settings(model=str(tmp_path / "absent.gguf"), model_explicit=True))
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("a.gguf", "b.gguf"):
        (folder / name).write_bytes(demo_path.read_bytes())
    with pytest.raises(ModelLoadError, match="--gguf-file"):
        load_backend(Settings(model=str(folder), model_explicit=True))
    backend = load_backend(Settings(model=str(folder), model_explicit=True, gguf_file="b.gguf", n_threads=1))
    assert backend.info.path.endswith("b.gguf")
    backend.close()


def test_demo_with_the_llamacpp_runtime_is_the_converted_demo(tmp_path, monkeypatch):
    from codellama_lsp.engine.loading import load_backend

    monkeypatch.setenv("CODELLAMA_LSP_CACHE", str(tmp_path))
    backend = load_backend(Settings(model="demo", model_explicit=True, runtime="llamacpp", n_threads=1))
    try:
        assert backend.info.is_demo and backend.info.runtime == "llamacpp"
        assert Path(backend.info.path).parent == tmp_path / "gguf"
    finally:
        backend.close()


# -- the command line and the server: no torch on the GGUF path ---------------------------------------------------

BLOCKER = '''
import sys, os
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            with open(os.environ["CODELLAMA_LSP_TEST_IMPORTS"], "a") as out:
                out.write(name + "\\n")
            raise ImportError(f"{name} imported on the GGUF path")
        return None
sys.meta_path.insert(0, _Refuse())
'''


@pytest.fixture()
def no_torch_env(tmp_path, monkeypatch):
    """Any import of torch or transformers in a child process is refused and written to a file."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    record = tmp_path / "imports.txt"
    record.write_text("")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CODELLAMA_LSP_TEST_IMPORTS", str(record))
    monkeypatch.setenv("CODELLAMA_LSP_RESIDENT", "0")
    return record


def test_complete_with_a_gguf_never_imports_torch(no_torch_env, demo_path, tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_STATE_HOME=str(tmp_path / "state"))
    proc = subprocess.run(
        [sys.executable, "-m", "codellama_lsp", "complete", "examples/stats.py:20:5", "--model", str(demo_path),
         "--json", "--no-resident", "--threads", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["runtime"] == "llamacpp" and data["prompt_ids"] and isinstance(data["completion"], str)
    assert no_torch_env.read_text() == ""
    assert "Traceback" not in proc.stderr


def test_complete_with_a_gguf_loads_in_process_by_default(no_torch_env, demo_path, tmp_path):
    """Default options (what a user types): no resident process is started for a GGUF, and no torch."""
    runtime = tmp_path / "run"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_STATE_HOME=str(tmp_path / "state"), CODELLAMA_LSP_RESIDENT="1",
               CODELLAMA_LSP_RUNTIME_DIR=str(runtime))
    proc = subprocess.run(
        [sys.executable, "-m", "codellama_lsp", "complete", "examples/stats.py:20:5", "--model", str(demo_path),
         "--threads", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and "resident" not in proc.stderr
    assert not list(runtime.glob("*.sock")) if runtime.exists() else True
    assert no_torch_env.read_text() == ""


def test_bad_gguf_on_the_command_line_is_one_line_and_exit_2(tmp_path, demo_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(demo_path.read_bytes()[:4096])
    env = dict(os.environ, CODELLAMA_LSP_RESIDENT="0", XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "codellama_lsp", "complete", "examples/stats.py:20:5",
                           "--model", str(cut), "--no-resident"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("codellama-lsp: error:") and "truncated" in lines[0], proc.stderr


@needs_smollm2
def test_smollm2_completes_left_to_right():
    backend = load(SMOLLM2_GGUF)
    try:
        assert not backend.info.fim and backend.info.runtime == "llamacpp"
        ids = backend.template.prefix_ids("def fibonacci(n):\n    ")
        result = backend.generate(ids, GenerationParams(max_new_tokens=24, stop_token_ids=[backend.tokenizer.eos_id]))
        assert result.stats.generated_tokens > 0 and result.text.strip()
    finally:
        backend.close()


def test_doctor_reports_the_llamacpp_runtime(demo_path, capsys):
    from codellama_lsp.cli import main

    assert main(["doctor", "--model", str(demo_path), "--json", "--threads", "1"]) == 0
    model = json.loads(capsys.readouterr().out)["model"]
    assert model["runtime"] == "llamacpp" and model["loaded"] and model["fim"] and model["quantization"] == "F16"
    assert main(["doctor", "--model", str(demo_path), "--no-load"]) == 0
    assert "runtime       llamacpp" in capsys.readouterr().out


@needs_smollm2
@pytest.mark.slow
async def test_raising_context_tokens_past_the_loaded_context_reloads_the_model(tmp_path):
    """llama.cpp's context is made at load, sized for ``context_tokens`` (plus room to answer). Raising the setting
    from the editor past it loads the model again, with the usual status and progress, and the prompt gets the
    larger budget; before, the prompt was silently cut to the old context (and a long answer ended in "lower the
    `context_tokens` setting"). Lowering it again keeps the loaded model."""
    from lsprotocol import types as lsp

    from lsp_client import capabilities, lsp_session, open_document, raw_request, to_plain

    start = {"repoContext": False, "nThreads": 1, "maxTokens": 2, "contextTokens": 512}  # a 1,024-token context
    text = "".join(f"def function_{i}(value):\n    return value * {i} + {i * 7}\n\n" for i in range(200))
    uri = (tmp_path / "long.py").as_uri()
    async with lsp_session(tmp_path / "home", model=SMOLLM2_GGUF, caps=capabilities(configuration=False),
                           init_options=start, ready=True) as c:
        open_document(c, uri, text, "python")

        async def prompt_tokens() -> int:
            plan = to_plain(await raw_request(c, "codellama/prompt", {
                "textDocument": {"uri": uri}, "position": {"line": text.count("\n"), "character": 0}}, timeout=300))
            assert plan["runtime"] == "llamacpp" and plan["completion"] is not None
            return plan["total_tokens"]

        def configure(context_tokens: int) -> None:
            c.workspace_did_change_configuration(lsp.DidChangeConfigurationParams(
                settings={"codellama": {**start, "contextTokens": context_tokens}}))

        def loads() -> int:
            return sum(1 for reports in c.progress_reports.values()
                       if reports and reports[0].kind == "begin" and reports[0].message.startswith("Loading"))

        assert 400 < await prompt_tokens() <= 512
        statuses, loaded = len(c.notes.statuses), loads()
        configure(2048)
        await c.notes.wait_status(lambda s: s.get("state") == "loading", after=statuses, timeout=60)
        ready = await c.notes.wait_status(lambda s: s.get("state") in ("ready", "error"), after=statuses)
        assert ready["state"] == "ready", ready
        assert loads() == loaded + 1
        assert 1600 < await prompt_tokens() <= 2048  # past the 1,024 tokens the first context held

        statuses, logs = len(c.notes.statuses), len(c.notes.logs)
        configure(1024)
        await c.notes.wait_log("settings applied", after=logs)
        assert 800 < await prompt_tokens() <= 1024
        assert [s["state"] for s in c.notes.statuses[statuses:]] == ["ready"] * (len(c.notes.statuses) - statuses)
        assert loads() == loaded + 1  # no reload for a smaller budget
