#!/usr/bin/env python
"""Train the bundled demo model: a ~2.6M-parameter Code Llama-format infilling model, from scratch, on CPU.

Why it exists: a fresh install, CI and every end-to-end test need a model that really infills and
knows when to stop (``▁<EOT>``), without downloading 13 GB of Code Llama weights. Random weights
cannot show that; this tiny model, trained for about 50 minutes on 2 CPU cores on the Python
standard library, can.

What it produces (everything the runtime loads through ``AutoModelForCausalLM.from_pretrained``):
``codellama_lsp/models/demo/`` with ``model.safetensors`` (fp16), ``config.json`` (LlamaForCausalLM,
RoPE θ=1e6), ``generation_config.json``, a SentencePiece-style BPE ``tokenizer.json`` trained here
(``<unk>``/``<s>``/``</s>`` = 0/1/2, byte fallback, infilling pieces ``▁<PRE> ▁<SUF> ▁<MID> ▁<EOT>``),
``tokenizer_config.json`` (``CodeLlamaTokenizer``) and ``TRAINING.md`` (data, command, time, losses).

Reproduce (seeded; the run stops at ``--steps`` or ``--minutes``, whichever comes first, and the
learning-rate schedule follows whichever is further along, so a slower machine still ends annealed):

    nice -n 10 python tools/train_demo_model.py            # ~50 min on 2 cores
    python tools/train_demo_model.py --steps 20 --minutes 2 --out tools/_work/smoke   # smoke test

Checkpoints go to ``tools/_work/`` every ``--save-every`` steps (ignored by git); ``--resume``
continues an interrupted run from there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import demo_data as dd  # noqa: E402

DEFAULT_OUT = REPO / "codellama_lsp" / "models" / "demo"
WORK = HERE / "_work"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the final model directory is written")
    p.add_argument("--work", type=Path, default=WORK / "demo-run", help="checkpoints and logs (not committed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout-fraction", type=float, default=0.05)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--seq-len", type=int, default=1024, help="tokens per packed training row")
    p.add_argument("--batch", type=int, default=4, help="rows per optimizer step")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--minutes", type=float, default=52.0, help="wall-clock cap for the optimization loop")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--fim-rate", type=float, default=0.9)
    p.add_argument("--eot-weight", type=float, default=1.0,
                   help="loss weight of the ▁<EOT> targets (1 = plain cross-entropy): teaches a small model to stop")
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --work")
    p.add_argument("--mix", choices=sorted(dd.MIXES), default="base", help="FIM span mix (see demo_data.MIXES)")
    p.add_argument("--max-window", type=int, default=0, help="longest example window in tokens (0 = seq-len - 24)")
    p.add_argument("--preferred-fim-mode", choices=("psm", "spm"), default="spm",
                   help="the layout `fim_mode = auto` picks for this checkpoint (config.json preferred_fim_mode)."
                   " SPM: it continues the text at the cursor, mid-line too. In PSM this small model stops"
                   " reliably (▁<EOT> right after its middle) but starts every middle on a new line")
    p.add_argument("--init-from", type=Path, help="start from another run's --work dir (its state.pt weights and"
                   " tokenizer): a second training phase; the record keeps both phases")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------------
# Model


def model_config(args, vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=16384,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        tie_word_embeddings=True,
    )


def build_model(config, seed: int):
    """Seeded initialisation; the evaluation rebuilds exactly this as its "untrained" baseline."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


# --------------------------------------------------------------------------------------------------
# Data stream


class WindowSampler:
    """Draws line-aligned text windows of about N tokens from the training files, size-weighted."""

    def __init__(self, files, codec: dd.Codec):
        import numpy as np

        self.files = files
        encs = codec.tok.encode_batch([f.text for f in files], add_special_tokens=False)
        self.starts = [np.array([o[0] for o in e.offsets], dtype=np.int64) for e in encs]
        self.ends = [np.array([o[1] for o in e.offsets], dtype=np.int64) for e in encs]
        sizes = np.array([len(s) for s in self.starts], dtype=np.float64)
        self.cum = np.cumsum(sizes)
        self.total_tokens = int(self.cum[-1])

    def window(self, rng: random.Random, n_tokens: int) -> tuple[str, bool]:
        """(text, reaches_end_of_file)."""
        import numpy as np

        k = int(np.searchsorted(self.cum, rng.random() * self.cum[-1], side="right"))
        k = min(k, len(self.files) - 1)
        text, starts, ends = self.files[k].text, self.starts[k], self.ends[k]
        n = len(starts)
        i = rng.randint(0, max(0, n - n_tokens // 2))
        c0 = text.rfind("\n", 0, int(starts[i])) + 1
        i0 = int(np.searchsorted(starts, c0, side="left"))
        j = min(n, i0 + n_tokens)
        c1 = int(ends[j - 1]) if j > 0 else len(text)
        at_end = j >= n
        if not at_end:
            nl = text.rfind("\n", c0, c1)
            if nl > c0 + (c1 - c0) // 2:
                c1 = nl + 1
        return text[c0:c1], at_end


def batch_stream(sampler: WindowSampler, codec: dd.Codec, rng: random.Random, args):
    """Yields (input_ids, labels) LongTensors of shape [batch, seq_len].

    Each row is packed with whole examples (never split across rows, so every FIM example keeps its
    prefix/suffix); the tail is padding with label -100. Every example starts with BOS.
    """
    import torch

    T = args.seq_len
    while True:
        inputs, labels = [], []
        for _ in range(args.batch):
            row: list[int] = []
            while T - len(row) > 96:
                room = T - len(row)
                ex = None
                for _try in range(4):
                    n = rng.randint(64, max(64, min(args.max_window or T - 24, room - 24)))
                    text, at_end = sampler.window(rng, n)
                    ex = dd.fim_example(codec, text, rng, fim_rate=args.fim_rate, mix=args.mix)
                    if ex[-1] != codec.eot and at_end:
                        ex = ex + [codec.eos]
                    if len(ex) <= room:
                        break
                    ex = None
                if ex is None:
                    break
                row.extend(ex)
            pad = T - len(row)
            lab = row[1:] + [-100]
            lab = [-100 if (t == codec.bos) else t for t in lab]  # never learn to predict BOS
            inputs.append(row + [codec.eos] * pad)
            labels.append(lab[: len(row)] + [-100] * pad)
        yield torch.tensor(inputs), torch.tensor(labels)


def heldout_rows(files, codec: dd.Codec, T: int, limit: int):
    """Fixed plain-LM rows from held-out files: [BOS] + the first T-1 tokens of each file chunk."""
    rows = []
    for f in files:
        ids = codec.enc(f.text)
        for s in range(0, len(ids), T - 1):
            chunk = ids[s : s + T - 1]
            if len(chunk) >= 64:
                rows.append([codec.bos] + chunk)
            if len(rows) >= limit:
                return rows
    return rows


def eval_loss(model, rows) -> float:
    """Mean next-token cross-entropy (nats/token) over ``rows``, BOS never a target."""
    import torch

    model.eval()
    tot, n = 0.0, 0
    with torch.no_grad():
        for r in rows:
            x = torch.tensor([r])
            logits = model(input_ids=x).logits[0, :-1].float()
            y = x[0, 1:]
            tot += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
            n += len(y)
    model.train()
    return tot / max(1, n)


# --------------------------------------------------------------------------------------------------
# Saving


def save_model_dir(model, tok, dest: Path, *, extra_files: dict[str, str] | None = None,
                   preferred_fim_mode: str = "spm") -> None:
    """Write a complete, loadable model directory atomically (fp16 safetensors + tokenizer files)."""
    import torch

    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    half = type(model)(model.config)
    half.load_state_dict(model.state_dict())
    half = half.to(torch.float16)
    half.config.dtype = "float16"
    half.config.preferred_context_tokens = 1024  # its training windows: longer prompts are out of distribution
    half.config.preferred_fim_mode = preferred_fim_mode
    half.generation_config.bos_token_id = 1
    half.generation_config.eos_token_id = 2
    half.save_pretrained(tmp, safe_serialization=True)
    tok.save(str(tmp / "tokenizer.json"))
    vocab = tok.get_vocab()
    (tmp / "tokenizer_config.json").write_text(
        json.dumps(dd.tokenizer_config(vocab, model_max_length=16384), indent=2, ensure_ascii=False) + "\n"
    )
    (tmp / "special_tokens_map.json").write_text(
        json.dumps(dd.special_tokens_map(), indent=2, ensure_ascii=False) + "\n"
    )
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    if dest.exists():
        old = dest.with_name(dest.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(dest)


def phases_md(rec: dict) -> list[str]:
    phases = rec.get("phases") or []
    if len(phases) < 2:
        return []
    out = ["Training ran in phases, each started from the previous one's weights (same tokenizer, same data):", "",
           "| Phase | Command | Span mix | Peak lr | ▁<EOT> weight | Window ≤ | Steps | Tokens | Minutes | Train loss | Held-out loss |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, p in enumerate(phases, 1):
        out.append(f"| {i} | `{p['command']}` | {p['mix']} {dd.MIXES[p['mix']]} | {p['lr']} | {p.get('eot_weight', 1.0)} | {p['max_window']} |"
                   f" {p['steps']} | {p['tokens']:,} | {p['train_minutes']} | {p['final_train_loss']:.3f} |"
                   f" {p['final_heldout_loss']:.3f} |")
    out += ["", "Span mix = weights of (one whole line, rest of a line, block of 2-6 lines, uniform split).",
            "The details below describe the last phase.", ""]
    return out


def phase_summary(rec: dict) -> dict:
    a = rec["args"]
    return {"command": rec["command"], "started": rec["started"], "train_minutes": round(rec["train_minutes"], 1),
            "steps": rec["steps_done"], "tokens": rec["tokens_seen"], "mix": a.get("mix", "base"),
            "lr": a["lr"], "eot_weight": a.get("eot_weight", 1.0), "max_window": a.get("max_window", 0) or a["seq_len"] - 24,
            "final_train_loss": rec["final_train_loss"], "final_heldout_loss": rec["final_heldout_loss"]}


def training_md(rec: dict) -> str:
    a = rec["args"]
    specials = ", ".join(f"`{p}`={rec['special_ids'][p]}" for p in dd.INFILL_PIECES)
    lines = [
        "# Demo model: how it was trained",
        "",
        "A tiny Code Llama-format infilling model (`LlamaForCausalLM`), trained from scratch on CPU by",
        "`tools/train_demo_model.py`. It shows the product working out of the box; it is not a useful",
        "coding model. Real use: Code Llama 7B/13B.",
        "",
        "## Command",
        "",
        "```",
        rec["command"],
        "```",
        "",
        *phases_md(rec),
        f"- Machine: {rec['machine']}",
        f"- Software: {rec['software']}",
        f"- Started {rec['started']}, finished {rec['finished']}; optimization loop {rec['train_minutes']:.1f} min,"
        f" whole script {rec['total_minutes']:.1f} min.",
        f"- Seed {a['seed']}. Steps run: {rec['steps_done']} of {a['steps']} (cap {a['minutes']} min);"
        f" tokens seen: {rec['tokens_seen']:,} (incl. padding {rec['padding_fraction']:.1%}).",
        "",
        "## Data",
        "",
        f"The pure-Python standard library of {rec['python']} (PSF license) at `{rec['stdlib_root']}`:",
        f"every `*.py` file that decodes as UTF-8, excluding directories named {sorted(dd.EXCLUDED_DIRS)}.",
        "",
        "| Set | Files | Bytes | sha256 over (path, content) |",
        "|---|---|---|---|",
    ]
    for name in ("all", "train", "heldout"):
        c = rec["corpus"][name]
        lines.append(f"| {name} | {c['files']} | {c['bytes']:,} | `{c['sha256'][:16]}…` |")
    lines += [
        "",
        f"Held-out files ({len(rec['heldout_files'])}, seeded file-level split, fraction {a['holdout_fraction']};"
        " never seen by the tokenizer or the model):",
        "",
        ", ".join(f"`{p}`" for p in rec["heldout_files"]),
        "",
        "## Tokenizer",
        "",
        f"BPE trained here with `tokenizers` on the training files: {rec['vocab_size']} pieces"
        " (`<unk>`=0, `<s>`=1, `</s>`=2, 256 `<0xNN>` byte-fallback pieces, learned pieces, then"
        f" {specials}).",
        "Normalizer Prepend(\"▁\") + Replace(\" \", \"▁\"), no pre-tokenizer, decoder Replace/ByteFallback/Fuse/Strip:",
        "the same structure as Code Llama's `tokenizer.json`, so it loads through the same code path",
        f"(`tokenizer_class` CodeLlamaTokenizer). {rec['chars_per_token']:.2f} characters per token on held-out files.",
        "",
        "## Model and objective",
        "",
        f"`LlamaForCausalLM`: {a['layers']} layers, hidden {a['hidden']}, {a['heads']} heads, MLP {a['intermediate']},"
        f" vocab {rec['vocab_size']}, tied embeddings, RoPE θ=1e6, max_position_embeddings 16384;"
        f" {rec['params']:,} parameters, stored as fp16 safetensors.",
        "",
        f"Objective: next-token prediction on packed rows of {a['seq_len']} tokens ({a['batch']} rows per step)"
        f" of line-aligned windows (64 to ~{a.get('max_window') or a['seq_len'] - 24} tokens) of the training files.",
        f"{a['fim_rate']:.0%} of windows become fill-in-the-middle examples, PSM and SPM half and half, built exactly",
        "like Meta's reference (`tools/demo_data.py`). Hidden span: {:.0%} one whole line, {:.0%} the rest of a line"
        " from a random character, {:.0%} a block of 2-6 lines, {:.0%} the paper's uniform random character split"
        " (mix `{}`).".format(*dd.MIXES[a.get("mix", "base")], a.get("mix", "base")),
        f"Loss weight of the ▁<EOT> targets: {a.get('eot_weight', 1.0)} (training loss is the weighted mean)."
        f" AdamW (β 0.9/0.95, weight decay {a['weight_decay']}), peak lr {a['lr']}, {a['warmup']} warm-up steps, cosine to"
        f" {a['min_lr_ratio']}×, grad-clip 1.0.",
        "",
        "## Result",
        "",
        "| | value |",
        "|---|---|",
        f"| final training loss (mean of last 50 steps) | {rec['final_train_loss']:.3f} nats/token |",
        f"| held-out loss ({rec['heldout_rows']} rows of ≤{a['seq_len']} tokens) | {rec['final_heldout_loss']:.3f} nats/token |",
        f"| held-out loss before training | {rec['initial_heldout_loss']:.3f} nats/token |",
        "",
        "Full evaluation (FIM exact match, ▁<EOT> rate, baselines, samples): `bench/demo_model_eval.py`,",
        "results in `bench/results/demo_model_eval.md`.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    t_start = time.time()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    args.work.mkdir(parents=True, exist_ok=True)
    log_path = args.work / "train_log.jsonl"

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    files = dd.collect_sources()
    train, held = dd.split_holdout(files, seed=args.seed, fraction=args.holdout_fraction)
    log(f"data: {len(train)} train files, {len(held)} held out ({dd.stdlib_root()})")

    tok_path = args.work / "tokenizer.json"
    if args.init_from:
        shutil.copy(args.init_from / "tokenizer.json", tok_path)
    if (args.resume or args.init_from) and tok_path.exists():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tok_path))
    else:
        tok = dd.train_tokenizer([f.text for f in train], vocab_size=args.vocab_size)
        tok.save(str(tok_path))
    codec = dd.Codec(tok)
    vocab = tok.get_vocab()
    held_tokens = sum(len(ids) for ids in codec.enc_batch([f.text for f in held]))
    chars_per_token = sum(len(f.text) for f in held) / held_tokens
    log(f"tokenizer: {codec.vocab_size} pieces, {chars_per_token:.2f} chars/token on held-out files")

    sampler = WindowSampler(train, codec)
    log(f"training corpus: {sampler.total_tokens:,} tokens")
    config = model_config(args, codec.vocab_size)
    model = build_model(config, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters")

    previous_phases = []
    if args.init_from:
        prev = json.loads((args.init_from / "training_record.json").read_text())
        previous_phases = prev.get("phases") or [phase_summary(prev)]
        model.load_state_dict(torch.load(args.init_from / "state.pt", weights_only=False)["model"])
        log(f"initialised from {args.init_from} ({len(previous_phases)} earlier phase(s))")
    hrows = heldout_rows(held, codec, args.seq_len, limit=24)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    rng = random.Random(args.seed + 1)
    step, tokens_seen, pad_tokens, elapsed_before = 0, 0, 0, 0.0
    initial_heldout = None
    state_path = args.work / "state.pt"
    if args.resume and state_path.exists():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        rng.setstate(st["rng"])
        torch.set_rng_state(st["torch_rng"])
        step, tokens_seen, pad_tokens = st["step"], st["tokens_seen"], st["pad_tokens"]
        elapsed_before, initial_heldout = st["elapsed"], st["initial_heldout"]
        log(f"resumed at step {step}")
    if initial_heldout is None:
        initial_heldout = eval_loss(model, hrows)
        log(f"held-out loss at init: {initial_heldout:.3f}")

    stream = batch_stream(sampler, codec, rng, args)
    cap_s = args.minutes * 60.0
    t_loop = time.time() - elapsed_before
    losses: list[float] = []
    last_heldout = initial_heldout

    def lr_at(progress: float, step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * cos)

    def checkpoint() -> None:
        torch.save(
            {"model": model.state_dict(), "opt": opt.state_dict(), "rng": rng.getstate(),
             "torch_rng": torch.get_rng_state(), "step": step, "tokens_seen": tokens_seen,
             "pad_tokens": pad_tokens, "elapsed": time.time() - t_loop, "initial_heldout": initial_heldout},
            args.work / "state.tmp",
        )
        os.replace(args.work / "state.tmp", state_path)
        save_model_dir(model, tok, args.work / "latest", preferred_fim_mode=args.preferred_fim_mode)

    model.train()
    while step < args.steps:
        elapsed = time.time() - t_loop
        if elapsed > cap_s:
            log(f"time cap reached after {step} steps")
            break
        progress = max(step / args.steps, elapsed / cap_s)
        for g in opt.param_groups:
            g["lr"] = lr_at(progress, step)
        x, y = next(stream)
        out = model(input_ids=x)
        flat_y = y.view(-1)
        token_loss = torch.nn.functional.cross_entropy(
            out.logits.float().view(-1, out.logits.size(-1)), flat_y, ignore_index=-100, reduction="none"
        )
        weights = torch.where(flat_y == codec.eot, args.eot_weight, 1.0)
        loss = (token_loss * weights).sum() / (flat_y != -100).sum().clamp(min=1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += x.numel()
        pad_tokens += int((y == -100).sum())
        losses.append(loss.item())
        if step % 25 == 0 or step == 1:
            rec = {"step": step, "loss": float(np.mean(losses[-25:])), "lr": opt.param_groups[0]["lr"],
                   "elapsed_s": round(time.time() - t_loop, 1), "tokens": tokens_seen}
            if step % args.save_every == 0:
                last_heldout = eval_loss(model, hrows)
                rec["heldout_loss"] = last_heldout
                checkpoint()
            with log_path.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))

    train_s = time.time() - t_loop
    final_heldout = eval_loss(model, hrows)
    log(f"done: {step} steps, {tokens_seen:,} tokens, held-out loss {final_heldout:.3f}")
    checkpoint()

    record = {
        "command": "nice -n 10 python tools/train_demo_model.py"
        + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:] if argv is None else argv)),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores ({platform.processor() or 'cpu'}), torch threads {args.threads}",
        "software": f"{dd.python_version_tag()}, torch {torch.__version__}, transformers {transformers.__version__},"
        f" tokenizers {__import__('tokenizers').__version__}",
        "python": dd.python_version_tag(),
        "stdlib_root": str(dd.stdlib_root()),
        "started": started,
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "train_minutes": train_s / 60,
        "total_minutes": (time.time() - t_start) / 60,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "steps_done": step,
        "tokens_seen": tokens_seen,
        "padding_fraction": pad_tokens / max(1, tokens_seen),
        "corpus": {"all": dd.corpus_record(files), "train": dd.corpus_record(train), "heldout": dd.corpus_record(held)},
        "heldout_files": [f.rel for f in held],
        "vocab_size": codec.vocab_size,
        "special_ids": {p: vocab[p] for p in dd.INFILL_PIECES},
        "chars_per_token": chars_per_token,
        "params": n_params,
        "final_train_loss": float(np.mean(losses[-50:])) if losses else float("nan"),
        "final_heldout_loss": final_heldout,
        "initial_heldout_loss": initial_heldout,
        "heldout_rows": len(hrows),
    }
    record["phases"] = previous_phases + [phase_summary(record)]
    (args.work / "training_record.json").write_text(json.dumps(record, indent=2) + "\n")
    save_model_dir(model, tok, args.out, preferred_fim_mode=args.preferred_fim_mode, extra_files={
        "TRAINING.md": training_md(record),
        "training_record.json": json.dumps(record, indent=2) + "\n",
    })
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
