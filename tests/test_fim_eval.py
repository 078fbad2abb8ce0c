"""The HumanEval-infilling harness: sandbox, dataset, scoring, reports, oracles, and a slice through the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codellama_lsp.evaluation import dataset, report, sandbox, scoring
from codellama_lsp.evaluation.lsp_driver import _snippet_to_text, hole_text

from shared_data import HUMANEVAL_DIR, REPO, needs_shared

needs_humaneval = pytest.mark.skipif(
    not (HUMANEVAL_DIR / dataset.SPLIT_FILES["single-line"]).is_file(),
    reason=f"HumanEval-infilling data not found at {HUMANEVAL_DIR} (check out ../shared or set CODELLAMA_LSP_SHARED)",
)
FAST = sandbox.Limits(timeout_s=3.0, memory_mb=512)


# -- sandbox ---------------------------------------------------------------------------------------------------


def test_sandbox_passes_a_correct_program_and_reports_a_failing_assertion():
    assert sandbox.run_program("def f(x):\n    return x + 1\nassert f(1) == 2\n", FAST).passed
    failed = sandbox.run_program("assert 1 + 1 == 3, 'wrong sum'\n", FAST)
    assert failed.status == sandbox.FAILED
    assert "AssertionError: wrong sum" in failed.detail


def test_sandbox_kills_an_endless_loop_at_the_timeout():
    result = sandbox.run_program("while True:\n    pass\n", sandbox.Limits(timeout_s=1.0))
    assert result.status == sandbox.TIMEOUT
    assert result.duration_s < 10


def test_sandbox_limits_memory():
    result = sandbox.run_program("block = bytearray(2 * 1024 ** 3)\n", FAST)
    assert result.status == sandbox.FAILED
    assert "MemoryError" in result.detail


@pytest.mark.parametrize("use_namespace", [True, False], ids=["namespace", "guard-only"])
def test_sandbox_has_no_network(use_namespace):
    program = "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\n"
    result = sandbox.run_program(program, FAST, use_namespace=use_namespace)
    assert not result.passed
    low_level = "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', 9))\n"
    assert not sandbox.run_program(low_level, FAST, use_namespace=use_namespace).passed
    # modules that merely import socket still work
    assert sandbox.run_program("import email.utils, socket, uuid\n", FAST, use_namespace=use_namespace).passed


@pytest.mark.skipif(not sandbox.network_isolation(), reason="unshare cannot create a network namespace here")
def test_sandbox_namespace_has_no_interfaces_but_loopback():
    # the guard is bypassed deliberately (via /proc) to check the namespace itself
    program = (
        "names = [line.split(':')[0].strip() for line in open('/proc/net/dev').read().splitlines()[2:]]\n"
        "assert set(names) <= {'lo'}, names\n"
    )
    assert sandbox.run_program(program, FAST).passed


def test_sandbox_an_early_exit_is_not_a_pass():
    for program in ("import sys\nsys.exit(0)\n", "exit(0)\n", "import os\nos._exit(0)\n"):
        assert not sandbox.run_program(program + "assert False\n", FAST).passed, program


def test_sandbox_blocks_destructive_calls_and_runs_in_a_scratch_directory(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    result = sandbox.run_program(f"import os\nos.remove({str(victim)!r})\n", FAST)
    assert not result.passed and "disabled" in result.detail
    assert victim.read_text() == "precious"
    spawn = sandbox.run_program("import subprocess\nsubprocess.run(['true'])\n", FAST)
    assert not spawn.passed
    cwd = sandbox.run_program(f"import os\nassert os.getcwd() != {str(REPO)!r}\nopen('scratch', 'w').write('x')\n", FAST)
    assert cwd.passed


# -- dataset ---------------------------------------------------------------------------------------------------


def test_parse_splits():
    assert dataset.parse_splits("all") == ["single-line", "multi-line", "random-span"]
    assert dataset.parse_splits("multi-line, random-span-light") == ["multi-line", "random-span-light"]
    with pytest.raises(dataset.DatasetError, match="unknown split"):
        dataset.parse_splits("single-line,two-line")


def test_missing_data_directory_is_a_clear_error(tmp_path):
    with pytest.raises(dataset.DatasetError, match="--data"):
        dataset.load_split(tmp_path, "single-line")


def test_malformed_task_file_is_a_clear_error(tmp_path):
    import gzip

    with gzip.open(tmp_path / dataset.SPLIT_FILES["single-line"], "wt") as handle:
        handle.write(json.dumps({"task_id": "x", "prompt": "a"}) + "\n")
    with pytest.raises(dataset.DatasetError, match="missing or non-string"):
        dataset.load_split(tmp_path, "single-line")


@needs_humaneval
def test_splits_load_with_upstream_counts():
    counts = {split: len(dataset.load_split(HUMANEVAL_DIR, split)) for split in dataset.SPLIT_FILES}
    assert counts == {"single-line": 1033, "multi-line": 5815, "random-span": 1640, "random-span-light": 164}


@needs_humaneval
def test_limit_is_a_seeded_sample_in_file_order():
    tasks = dataset.load_split(HUMANEVAL_DIR, "multi-line")
    first = dataset.select(tasks, 25, seed=3)
    assert first == dataset.select(tasks, 25, seed=3)
    assert first != dataset.select(tasks, 25, seed=4)
    positions = [tasks.index(t) for t in first]
    assert positions == sorted(positions) and len(set(positions)) == 25


# -- scoring and reports ---------------------------------------------------------------------------------------


def test_percentile_interpolates_between_ranks():
    assert scoring.percentile([], 50) is None
    assert scoring.percentile([5.0], 95) == 5.0
    assert scoring.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert scoring.percentile(list(map(float, range(101))), 95) == pytest.approx(95.0)


def test_exact_match_strict_and_whitespace_normalised():
    strict = scoring.compare("    return x\n", "    return x\n")
    assert strict["exact"] and strict["exact_ws"] and strict["edit_similarity"] == 1.0
    loose = scoring.compare("  return  x", "    return x\n")
    assert not loose["exact"] and loose["exact_ws"]
    wrong = scoring.compare("return y", "return x")
    assert not wrong["exact"] and not wrong["exact_ws"] and 0 < wrong["edit_similarity"] < 1


def test_summary_and_markdown_table():
    results = [
        scoring.TaskResult("a", "single-line", "spm", "x", "passed", latency_ms=10.0, **scoring.compare("x", "x")),
        scoring.TaskResult("b", "single-line", "spm", "", "failed", latency_ms=30.0, **scoring.compare("", "y")),
        scoring.TaskResult("c", "single-line", "spm", "", "error", "boom", **scoring.compare("", "z")),
    ]
    summary = scoring.summarize(results, "single-line", "spm")
    assert summary.tasks == 3 and summary.pass_at_1 == pytest.approx(100 / 3)
    assert summary.exact_match == pytest.approx(100 / 3)
    assert (summary.latency_p50_ms, summary.empty, summary.errors) == (20.0, 1, 1)
    assert summary.statuses == {"error": 1, "failed": 1, "passed": 1}
    table = report.markdown_table([summary])
    assert "| single-line | spm | 3 | 33.3 |" in table
    assert table.rstrip().endswith("| 83.3 |")  # the paper's 7B single-line SPM anchor


def test_hole_text_respects_edits_beyond_the_hole():
    assert hole_text("ab+XY+cd", "ab+", "+cd") == "XY"
    # a range that re-types the end of the prefix unchanged still leaves just the hole's text
    assert hole_text("def f():\n    return 1\n", "def f():\n    ret", "\n") == "urn 1"
    # a range that rewrote the line's indentation: the changed part is what counts
    assert hole_text("def f():\n  return 1\n", "def f():\n    ret", "\n") == "return 1"
    assert hole_text("abc", "abc", "") == ""


def test_snippet_items_become_plain_text():
    assert _snippet_to_text("foo(${1:x}, $2)$0 costs \\$5") == "foo(x, ) costs $5"


# -- the harness end to end ------------------------------------------------------------------------------------


def _bench(tmp_path: Path, *args: str, timeout: float = 290) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "result"
    command = [sys.executable, str(REPO / "bench" / "fim_eval.py"), "--data", str(HUMANEVAL_DIR), "--no-progress",
               "--out", str(out), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((out.parent / "result.json").read_text())
    assert (out.parent / "result.md").read_text().count("\n|") >= 3
    return data


@needs_humaneval
def test_canonical_oracle_scores_100_percent_on_every_split(tmp_path):
    data = _bench(tmp_path, "--oracle", "canonical", "--split", "all", "--limit", "15", "--seed", "1")
    assert [s["split"] for s in data["summary"]] == ["single-line", "multi-line", "random-span"]
    for summary in data["summary"]:
        failures = [t for t in data["tasks"] if t["split"] == summary["split"] and t["status"] != "passed"]
        assert summary["pass_at_1"] == 100.0, failures
        assert summary["exact_match"] == 100.0
    assert data["meta"]["command"].startswith("python bench/fim_eval.py")


@needs_humaneval
def test_empty_oracle_scores_about_zero(tmp_path):
    data = _bench(tmp_path, "--oracle", "empty", "--split", "single-line,multi-line", "--limit", "20", "--seed", "1")
    for summary in data["summary"]:
        assert summary["pass_at_1"] <= 10.0, summary
        assert summary["exact_match"] == 0.0 and summary["empty"] == 20


def test_bad_arguments_are_reported_not_raised(tmp_path):
    command = [sys.executable, str(REPO / "bench" / "fim_eval.py"), "--data", str(tmp_path), "--oracle", "empty"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not found" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([*command, "--fim-mode", "fim"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--fim-mode" in done.stderr


# -- through the real server -----------------------------------------------------------------------------------

ECHO_TASK = "SingleLineInfilling/HumanEval/0/L7"  # hole "    return False\n" at the end of the function


def build_fim_echo_llama(dest: Path, answer: str) -> Path:
    """A real Llama checkpoint whose greedy infill after ``▁<MID>`` is exactly ``answer``, then EOS.

    Every attention and MLP output projection is zero, so each position's last hidden state is its own token's
    embedding: the model is a bigram table. The tokens of the chain ``▁<MID>, answer...`` get one-hot embeddings
    and ``lm_head`` maps each to the next (the last to EOS). A PSM prompt ends with ``▁<MID>``, so the server
    gets the canonical answer from a model loaded the way users load Code Llama — a perfect model for one task.
    """
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from codellama_lsp.engine.tokenizer import load_tokenizer
    from shared_data import TOKENIZER_DIR

    tok = load_tokenizer(TOKENIZER_DIR)
    chain = [tok.token_id("▁<MID>"), *tok.encode(answer, leading_space=False)]
    assert len(set(chain)) == len(chain) and tok.decode(chain[1:]) == answer
    hidden = 64
    config = LlamaConfig(vocab_size=32016, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=16384,
                         rope_theta=1_000_000.0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed.mul_(0.01)
        head.zero_()
        for dim, (token, successor) in enumerate(zip(chain, [*chain[1:], tok.eos_id])):
            embed[token].zero_()
            embed[token, dim] = 1.0
            head[successor, dim] = 10.0
    model.save_pretrained(dest, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TOKENIZER_DIR / name, dest / name)
    return dest


@needs_humaneval
@needs_shared
@pytest.mark.slow
def test_a_perfect_answer_passes_through_the_server(tmp_path):
    """The whole path: document over LSP, cursor on the hole, the server's answer applied, program run."""
    (task,) = dataset.load_tasks(HUMANEVAL_DIR, ["single-line"], pattern=f"^{ECHO_TASK}$")["single-line"]
    model = build_fim_echo_llama(tmp_path / "echo", task.canonical_solution)
    data = _bench(tmp_path, "--model", str(model), "--split", "single-line", "--fim-mode", "psm",
                  "--tasks", f"^{ECHO_TASK}$")
    (result,) = data["tasks"]
    assert result["status"] == "passed", result
    assert result["exact_ws"] and result["completion"].strip() == task.canonical_solution.strip()
    assert result["latency_ms"] > 0 and result["server"]["stop_reason"] == "eos"
    assert data["meta"]["model_info"]["state"] == "ready"


TINY_SLICE = ["--split", "single-line", "--limit", "3", "--max-tokens", "4"]


@pytest.fixture(scope="module")
def plain_run(tiny_model_dir, tmp_path_factory) -> dict:
    """One run of the tiny random model in both FIM modes without repository context (shared by two tests)."""
    if not (HUMANEVAL_DIR / dataset.SPLIT_FILES["single-line"]).is_file():
        pytest.skip(f"HumanEval-infilling data not found at {HUMANEVAL_DIR}")
    return _bench(tmp_path_factory.mktemp("plain"), "--model", str(tiny_model_dir), *TINY_SLICE, "--fim-mode", "psm,spm")


@pytest.mark.slow
def test_each_fim_mode_gets_its_own_server_session(plain_run):
    summaries = [(s["split"], s["fim_mode"], s["tasks"], s["errors"]) for s in plain_run["summary"]]
    assert summaries == [("single-line", "psm", 3, 0), ("single-line", "spm", 3, 0)]
    assert {m: plain_run["meta"]["server_settings"][m]["fim_mode"] for m in ("psm", "spm")} == {"psm": "psm", "spm": "spm"}
    assert all(t["latency_ms"] > 0 and t["server"]["prompt_tokens"] > 0 for t in plain_run["tasks"])
    assert plain_run["meta"]["model_info"]["state"] == "ready"


@pytest.mark.slow
def test_repository_context_reaches_the_prompt(plain_run, tiny_model_dir, tmp_path):
    with_repo = _bench(tmp_path, "--model", str(tiny_model_dir), *TINY_SLICE, "--fim-mode", "psm", "--repo-context")
    assert with_repo["meta"]["repo_context"] is True
    # the unit test opened beside the document is packed into the prompt as repository context
    tokens = {t["task_id"]: t["server"]["prompt_tokens"] for t in plain_run["tasks"] if t["fim_mode"] == "psm"}
    assert tokens.keys() == {t["task_id"] for t in with_repo["tasks"]}
    for t in with_repo["tasks"]:
        assert t["server"]["prompt_tokens"] > tokens[t["task_id"]], t["task_id"]


DEMO_DIR = REPO / "codellama_lsp" / "models" / "demo"


@needs_humaneval
@pytest.mark.skipif(not (DEMO_DIR / "config.json").is_file(), reason=f"demo model not found at {DEMO_DIR}")
@pytest.mark.slow
def test_demo_model_20_task_slice_through_the_server(tmp_path):
    """The CI slice: 20 single-line tasks, SPM, the bundled demo model, every step real."""
    data = _bench(tmp_path, "--model", "demo", "--split", "single-line", "--fim-mode", "spm", "--limit", "20")
    (summary,) = data["summary"]
    assert (summary["tasks"], summary["errors"]) == (20, 0)
    assert summary["latency_p50_ms"] is not None and summary["latency_p95_ms"] >= summary["latency_p50_ms"]
    assert all(t["server"].get("stop_reason") for t in data["tasks"]), "every request reports how it ended"
    assert data["meta"]["model_info"]["model"] and data["meta"]["model_info"]["state"] == "ready"


@needs_humaneval
@pytest.mark.parametrize("split", ["single-line", "multi-line", "random-span"])
def test_the_clean_up_keeps_right_answers_and_cuts_overruns(split):
    """What ``--oracle postprocessed`` and ``--oracle overrun`` measure (committed in bench/results/), here in
    process on a seeded slice and compared as text up to whitespace: the clean-up gives a right answer back,
    alone or followed by each kind of overrun."""
    from codellama_lsp.evaluation.dataset import load_tasks
    from codellama_lsp.evaluation.fim import OVERRUNS, oracle_fill

    tasks = load_tasks(HUMANEVAL_DIR, [split], limit=60, seed=3)[split]
    same = lambda a, b: "".join(a.split()) == "".join(b.split())  # noqa: E731
    kept = sum(same(oracle_fill(t, "postprocessed"), t.canonical_solution) for t in tasks)
    assert kept >= 0.97 * len(tasks)
    for kind in OVERRUNS:
        cut = [t.task_id for t in tasks if not same(oracle_fill(t, "overrun", kind), t.canonical_solution)]
        assert len(cut) <= 0.05 * len(tasks), (kind, cut)
