#!/usr/bin/env python
"""Evaluate the bundled demo model on held-out standard-library files, against two baselines.

Why: the demo model exists to show infilling working out of the box; this script shows *how well*
it works and that the numbers come from training, not luck, by running the same measurements on
(a) a unigram model (token frequencies of the training files, add-one smoothed) and (b) the
untrained model (the trainer's seeded initialisation, same architecture).

Measured, on the held-out files listed in ``codellama_lsp/models/demo/training_record.json``:

* next-token loss (nats/token) over every held-out token, in rows of ``--seq-len``;
* single-line infilling at line boundaries (the hole is one whole non-blank line, newline
  included), greedy, PSM and SPM, prompts built exactly like Meta's reference: exact match,
  ``▁<EOT>``-termination rate, and whether the file still parses with the completion in place;
* latency per completion; five real samples (good and bad).

It also checks that the project's own prompt builder (``engine.templates.template_for(...).fim_ids``)
produces token-identical prompts for this model.

    nice -n 5 python bench/demo_model_eval.py            # writes bench/results/demo_model_eval.{json,md}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import demo_data as dd  # noqa: E402
from common import parses  # noqa: E402

DEFAULT_MODEL = REPO / "codellama_lsp" / "models" / "demo"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--holes", type=int, default=200, help="single-line holes to sample from held-out files")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--prefix-chars", type=int, default=1500, help="context kept before the hole (whole lines)")
    p.add_argument("--suffix-chars", type=int, default=800, help="context kept after the hole (whole lines)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--loss-rows", type=int, default=0, help="cap on loss rows (0 = every held-out token)")
    p.add_argument("--latency-holes", type=int, default=20, help="holes timed one at a time (batch of one)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--name", default="demo_model_eval")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------------


class Hole:
    def __init__(self, rel: str, text: str, start: int, end: int, prefix_chars: int, suffix_chars: int):
        self.rel, self.start, self.end = rel, start, end
        p0 = text.rfind("\n", 0, max(0, start - prefix_chars)) + 1 if start > prefix_chars else 0
        s1 = text.find("\n", min(len(text), end + suffix_chars))
        s1 = len(text) if s1 < 0 else s1 + 1
        self.prefix, self.middle, self.suffix = text[p0:start], text[start:end], text[end:s1]
        self.file_before, self.file_after = text[:start], text[end:]
        self.line_no = text.count("\n", 0, start) + 1


def sample_holes(files, n: int, seed: int, prefix_chars: int, suffix_chars: int) -> list[Hole]:
    """Seeded single-line holes: one whole non-blank line (newline included), spread over files."""
    rng = random.Random(seed)
    cands = []
    for f in files:
        pos = 0
        for line in f.text.splitlines(keepends=True):
            if line.strip() and line.endswith("\n"):
                cands.append((f, pos, pos + len(line)))
            pos += len(line)
    picks = rng.sample(cands, min(n, len(cands)))
    return [Hole(f.rel, f.text, s, e, prefix_chars, suffix_chars) for f, s, e in picks]


class Unigram:
    """Token-frequency model: loss from add-one-smoothed counts; generation = the most frequent token."""

    def __init__(self, codec: dd.Codec, texts: list[str]):
        counts = Counter()
        for ids in codec.enc_batch(texts):
            counts.update(ids)
        counts[codec.eos] += len(texts)
        total = sum(counts.values()) + codec.vocab_size
        self.logp = [math.log((counts.get(i, 0) + 1) / total) for i in range(codec.vocab_size)]
        self.top = max(range(codec.vocab_size), key=lambda i: self.logp[i])

    def loss(self, rows) -> tuple[float, int]:
        tot = n = 0
        for r in rows:
            for t in r[1:]:
                tot -= self.logp[t]
                n += 1
        return tot / n, n

    def generate(self, prompts, max_new, stop) -> list[list[int]]:
        return [[self.top] * max_new if self.top not in stop else [self.top] for _ in prompts]


def lm_loss(model, rows, batch: int = 8) -> tuple[float, int]:
    """Summed cross-entropy over right-padded batches of rows (padding never scored)."""
    import torch

    tot, n = 0.0, 0
    with torch.no_grad():
        for b in range(0, len(rows), batch):
            group = rows[b : b + batch]
            width = max(len(r) for r in group)
            x = torch.full((len(group), width), 2)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for i, r in enumerate(group):
                x[i, : len(r)] = torch.tensor(r)
                mask[i, : len(r)] = 1
            logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
            y = x[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            tot += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100, reduction="sum").item()
            n += int((y != -100).sum())
    return tot / n, n


def greedy(model, prompt: list[int], max_new: int, stop: set[int]) -> list[int]:
    """One completion, as the editor gets it (batch of one); used for latency."""
    return greedy_batch(model, [prompt], max_new, stop, batch=1)[0]


def greedy_batch(model, prompts: list[list[int]], max_new: int, stop: set[int], batch: int = 16) -> list[list[int]]:
    """Greedy completions for many prompts, left-padded batches of similar length; each result is
    cut after its first stop id (inclusive)."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    with torch.no_grad():
        for b in range(0, len(order), batch):
            idx = order[b : b + batch]
            width = max(len(prompts[i]) for i in idx)
            x = torch.full((len(idx), width), 2)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                p = prompts[i]
                x[row, width - len(p):] = torch.tensor(p)
                mask[row, width - len(p):] = 1
            gen = model.generate(x, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                 eos_token_id=sorted(stop), pad_token_id=2)[:, width:].tolist()
            for row, i in enumerate(idx):
                ids = gen[row]
                cut = next((k for k, t in enumerate(ids) if t in stop), None)
                out[i] = ids if cut is None else ids[: cut + 1]
    return out


def fim_eval(name, gen, codec: dd.Codec, holes: list[Hole], mode: str, max_new: int) -> dict:
    stop = {codec.eot, codec.eos}
    rows = []
    prompts = [codec.psm(h.prefix, h.suffix) if mode == "psm" else codec.spm(h.prefix, h.suffix) for h in holes]
    outputs = gen(prompts, max_new, stop)
    for h, ids in zip(holes, outputs):
        eot = bool(ids) and ids[-1] == codec.eot
        body = [t for t in ids if t not in stop]
        text = codec.decode_infill(body)
        target = h.middle
        rows.append({
            "file": h.rel, "line": h.line_no, "target": target, "completion": text, "eot": eot,
            "stopped": bool(ids) and ids[-1] in stop, "tokens": len(ids),
            "exact": text.rstrip("\n") == target.rstrip("\n"),
            "exact_stripped": text.strip() == target.strip(),
            # what a single-line editor completion shows: the text up to the first newline
            "first_line_exact": text.split("\n", 1)[0] == target.rstrip("\n"),
            "single_line": text.rstrip("\n").count("\n") == 0,
            "file_parses": parses(h.file_before + text + h.file_after),
        })
    n = len(rows)
    rate = lambda k: sum(r[k] for r in rows) / n  # noqa: E731
    return {
        "model": name, "mode": mode, "holes": n,
        "exact_match": rate("exact"), "exact_match_stripped": rate("exact_stripped"),
        "first_line_exact": rate("first_line_exact"),
        "eot_rate": rate("eot"), "single_line_rate": rate("single_line"), "file_parses_rate": rate("file_parses"),
        "rows": rows,
    }


def wrapper_agreement(model_dir: Path, codec: dd.Codec, holes: list[Hole]) -> dict:
    """Do the project's tokenizer wrapper and template build the same prompts as the training code?"""
    try:
        from codellama_lsp.engine.templates import template_for
        from codellama_lsp.engine.tokenizer import load_tokenizer

        tok = load_tokenizer(model_dir)
        tmpl = template_for(tok)
    except Exception as exc:  # the runtime modules are developed in parallel; report, don't fail
        return {"available": False, "error": f"{type(exc).__name__}: {exc}"}
    same = {"psm": 0, "spm": 0}
    for h in holes:
        same["psm"] += tmpl.fim_ids(h.prefix, h.suffix, mode="psm") == codec.psm(h.prefix, h.suffix)
        same["spm"] += tmpl.fim_ids(h.prefix, h.suffix, mode="spm") == codec.spm(h.prefix, h.suffix)
    return {"available": True, "family": tmpl.family, "fim": tmpl.fim,
            "fim_stop_ids": list(tmpl.fim_stop_ids), "psm_identical": same["psm"],
            "spm_identical": same["spm"], "holes": len(holes)}


def pick_samples(res: dict, k_good: int = 3, k_bad: int = 2) -> list[dict]:
    """The first rows (in seeded hole order) whose first line is right, then the first that are not."""
    good = [r for r in res["rows"] if r["first_line_exact"]][:k_good]
    bad = [r for r in res["rows"] if not r["first_line_exact"]][:k_bad]
    return good + bad


# --------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import transformers
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    t_all = time.time()
    load_start = [round(x, 1) for x in os.getloadavg()]
    record = json.loads((args.model / "training_record.json").read_text())
    files = {f.rel: f for f in dd.collect_sources()}
    held = [files[p] for p in record["heldout_files"] if p in files]
    missing = [p for p in record["heldout_files"] if p not in files]
    train = [f for p, f in files.items() if p not in set(record["heldout_files"])]
    print(f"held-out files: {len(held)} (missing {len(missing)}); train files {len(train)}", flush=True)

    codec = dd.Codec(Tokenizer.from_file(str(args.model / "tokenizer.json")))
    t0 = time.perf_counter()
    trained = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    torch.manual_seed(record["args"]["seed"])
    untrained = LlamaForCausalLM(trained.config).eval()
    unigram = Unigram(codec, [f.text for f in train])

    # 1. next-token loss on every held-out token
    rows = []
    for f in held:
        ids = codec.enc(f.text) + [codec.eos]
        for s in range(0, len(ids), args.seq_len - 1):
            chunk = ids[s : s + args.seq_len - 1]
            if len(chunk) >= 2:
                rows.append([codec.bos] + chunk)
    if args.loss_rows:
        rows = rows[: args.loss_rows]
    losses = {}
    for name, fn in (("trained", lambda: lm_loss(trained, rows)), ("untrained", lambda: lm_loss(untrained, rows)),
                     ("unigram", lambda: unigram.loss(rows))):
        loss, n = fn()
        losses[name] = {"nats_per_token": loss, "perplexity": math.exp(loss), "tokens": n}
        print(f"loss {name}: {loss:.3f} nats/token over {n} tokens", flush=True)
    held_bytes = sum(len(f.text.encode()) for f in held)
    for v in losses.values():  # only meaningful when every held-out byte was scored
        v["bits_per_byte"] = (v["nats_per_token"] * v["tokens"] / math.log(2) / held_bytes) if not args.loss_rows else None

    # 2. single-line FIM
    holes = sample_holes(held, args.holes, args.seed, args.prefix_chars, args.suffix_chars)
    gens = {
        "trained": lambda p, m, s: greedy_batch(trained, p, m, s),
        "untrained": lambda p, m, s: greedy_batch(untrained, p, m, s),
        "unigram": unigram.generate,
    }
    fim = []
    for name, gen in gens.items():
        for mode in ("psm", "spm"):
            res = fim_eval(name, gen, codec, holes, mode, args.max_new_tokens)
            fim.append(res)
            print(f"fim {name} {mode}: EM {res['exact_match']:.1%}  EOT {res['eot_rate']:.1%}  "
                  f"parses {res['file_parses_rate']:.1%}", flush=True)

    # 3. latency of one completion at a time (what an editor waits for), model already resident
    latency = {}
    stop = {codec.eot, codec.eos}
    for mode in ("psm", "spm"):
        times = []
        for h in holes[: args.latency_holes]:
            prompt = codec.psm(h.prefix, h.suffix) if mode == "psm" else codec.spm(h.prefix, h.suffix)
            t0 = time.perf_counter()
            greedy(trained, prompt, args.max_new_tokens, stop)
            times.append(time.perf_counter() - t0)
        latency[mode] = {"n": len(times), "median_ms": 1000 * statistics.median(times),
                         "max_ms": 1000 * max(times)}
    print(f"latency: {latency}", flush=True)

    agreement = wrapper_agreement(args.model, codec, holes)
    print(f"wrapper agreement: {agreement}", flush=True)

    samples = []
    for r in fim:
        if r["model"] == "trained":
            for s in pick_samples(r, 3 if r["mode"] == "spm" else 2, 1 if r["mode"] == "spm" else 1):
                samples.append(dict(s, mode=r["mode"]))
    samples = samples[:5]
    hole_by_key = {(h.rel, h.line_no): h for h in holes}
    for s in samples:
        h = hole_by_key[(s["file"], s["line"])]
        s["prefix_tail"] = "".join(h.prefix.splitlines(keepends=True)[-4:])
        s["suffix_head"] = "".join(h.suffix.splitlines(keepends=True)[:2])

    result = {
        "command": "python bench/demo_model_eval.py" + (" " + " ".join(sys.argv[1:]) if len(sys.argv) > 1 else ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {args.threads}, load average at start {load_start}",
        "software": f"{dd.python_version_tag()}, torch {torch.__version__}, transformers {transformers.__version__}",
        "model_dir": str(args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model),
        "model_params": sum(p.numel() for p in trained.parameters()),
        "model_load_s": load_s,
        "heldout": {"files": len(held), "bytes": held_bytes, "missing": missing},
        "loss": losses,
        "fim": [{k: v for k, v in r.items() if k != "rows"} for r in fim],
        "latency": latency,
        "fim_rows_trained": {r["mode"]: r["rows"] for r in fim if r["model"] == "trained"},
        "wrapper_agreement": agreement,
        "samples": samples,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "total_s": time.time() - t_all,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(result))
    print(f"wrote {args.out / args.name}.json and .md in {result['total_s']:.0f} s", flush=True)
    return 0


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def markdown(r: dict) -> str:
    L = r["loss"]
    fim = {(x["model"], x["mode"]): x for x in r["fim"]}
    n_holes = r["fim"][0]["holes"]
    out = [
        "# Demo model evaluation (held-out standard-library files)",
        "",
        f"- Date: {r['date']}; machine: {r['machine']}; {r['software']}",
        f"- Command: `{r['command']}`",
        f"- Model: `{r['model_dir']}` ({r['model_params']:,} parameters, loaded in {r['model_load_s']:.2f} s)",
        f"- Held-out: {r['heldout']['files']} files, {r['heldout']['bytes']:,} bytes, never seen in training",
        f"- FIM: {n_holes} single-line holes (one whole non-blank line, newline included), greedy, "
        f"≤{r['settings']['max_new_tokens']} new tokens (batched, left-padded), context ≤{r['settings']['prefix_chars']} chars before / "
        f"≤{r['settings']['suffix_chars']} after, prompts built like Meta's reference.",
        "",
        "| Model | Held-out loss (nats/token) | bits/byte | FIM exact match PSM / SPM | ends with ▁<EOT> PSM / SPM | file still parses PSM / SPM |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (("unigram", "unigram baseline"), ("untrained", "untrained (init) baseline"),
                        ("trained", "**demo model**")):
        p, s = fim[(name, "psm")], fim[(name, "spm")]
        out.append(
            f"| {label} | {L[name]['nats_per_token']:.3f} | {_num(L[name]['bits_per_byte'])} | "
            f"{p['exact_match']:.1%} / {s['exact_match']:.1%} | {p['eot_rate']:.1%} / {s['eot_rate']:.1%} | "
            f"{p['file_parses_rate']:.1%} / {s['file_parses_rate']:.1%} |"
        )
    tp, ts = fim[("trained", "psm")], fim[("trained", "spm")]
    out += [
        "",
        f"Demo model, whitespace-insensitive exact match: PSM {tp['exact_match_stripped']:.1%}, SPM"
        f" {ts['exact_match_stripped']:.1%}; completions that stay on one line: PSM {tp['single_line_rate']:.1%},"
        f" SPM {ts['single_line_rate']:.1%}; first line of the completion equals the hidden line (what a"
        f" single-line editor completion cut at the newline would show): PSM {tp['first_line_exact']:.1%},"
        f" SPM {ts['first_line_exact']:.1%} (unigram {fim[('unigram', 'psm')]['first_line_exact']:.1%},"
        f" untrained {fim[('untrained', 'psm')]['first_line_exact']:.1%} / {fim[('untrained', 'spm')]['first_line_exact']:.1%}).",
        "",
        f"Latency of one completion (batch of one, model resident, greedy, {r['latency']['psm']['n']} holes,"
        f"): PSM median {r['latency']['psm']['median_ms']:.0f} ms"
        f" (max {r['latency']['psm']['max_ms']:.0f}), SPM median {r['latency']['spm']['median_ms']:.0f} ms"
        f" (max {r['latency']['spm']['max_ms']:.0f}).",
        "",
    ]
    a = r["wrapper_agreement"]
    if a.get("available"):
        out.append(f"Project prompt builder (`template_for(load_tokenizer(dir)).fim_ids`) vs the training construction:"
                   f" PSM identical {a['psm_identical']}/{a['holes']}, SPM identical {a['spm_identical']}/{a['holes']};"
                   f" family `{a['family']}`, fim={a['fim']}, stop ids {a['fim_stop_ids']}.")
    else:
        out.append(f"Project prompt builder not checked: {a.get('error')}")
    out += ["", "## Samples (real, greedy; ✓ = exact match, ½ = first line right but did not stop)", ""]
    for i, s in enumerate(r["samples"], 1):
        mark = "✓" if s["exact"] else ("½" if s["first_line_exact"] else "✗")
        out += [
            f"**{i}. {mark} `{s['file']}` line {s['line']}** ({s['mode'].upper()}, "
            f"{'ended with ▁<EOT>' if s['eot'] else 'no ▁<EOT>'})",
            "",
            "```python",
            s["prefix_tail"].rstrip("\n"),
            "# ---- expected: " + s["target"].rstrip("\n"),
            "# ---- model:    " + s["completion"].rstrip("\n").replace("\n", "\\n"),
            s["suffix_head"].rstrip("\n"),
            "```",
            "",
        ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
