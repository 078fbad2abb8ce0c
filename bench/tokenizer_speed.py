#!/usr/bin/env python3
"""Micro-benchmark of the tokenizer wrapper: what a keystroke costs in encoding, and streaming cost.

    python bench/tokenizer_speed.py [--tokenizer DIR] [--write bench/results/tokenizer_speed.md]

Every completion request encodes the whole prefix and suffix around the cursor, so encode runs on
every keystroke. Measured (medians, one thread of the calling process):
  * loading: ``load_tokenizer`` vs transformers' ``AutoTokenizer``;
  * a whole file, encoded by transformers, by ``tokenizers`` directly and by the wrapper (cold);
  * a keystroke: the prefix grows by one character in the middle of the file, the suffix is
    unchanged; the wrapper's line cache re-encodes only the edited line;
  * streaming: ``StreamDetokenizer.push`` per token vs re-decoding the whole output per token.
Defaults to the shared Code Llama tokenizer (../shared/data/codellama-tokenizer).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from codellama_lsp.engine.tokenizer import StreamDetokenizer, Tokenizer, load_tokenizer  # noqa: E402

DEFAULT_TOKENIZER = ROOT.parent / "shared" / "data" / "codellama-tokenizer"
FILES = ("argparse.py", "_pydecimal.py", "textwrap.py")


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def clear_cache(tok: Tokenizer) -> None:
    tok._line_cache.cache_clear()
    tok._block_cache.cache_clear()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--write", type=Path, help="also write the results as markdown to this file")
    args = parser.parse_args()
    if not (args.tokenizer / "tokenizer.json").is_file():
        print(f"no tokenizer.json in {args.tokenizer}", file=sys.stderr)
        return 2

    rows: list[tuple[str, str]] = []
    start = time.perf_counter()
    tok = load_tokenizer(args.tokenizer)
    rows.append(("load_tokenizer (wrapper, tokenizer.json only)", f"{(time.perf_counter() - start) * 1000:.0f} ms"))
    start = time.perf_counter()
    from transformers import AutoTokenizer

    imported = time.perf_counter()
    hf = AutoTokenizer.from_pretrained(str(args.tokenizer), add_prefix_space=False)
    done = time.perf_counter()
    rows.append(("transformers import + AutoTokenizer.from_pretrained",
                 f"{(imported - start) * 1000:.0f} + {(done - imported) * 1000:.0f} ms"))

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / name).read_text(encoding="utf-8") for name in FILES if (stdlib / name).is_file()]
    text = max(texts, key=len)
    n_tokens = len(tok.encode(text))
    rows.append(("test file", f"{len(text):,} chars, {n_tokens:,} tokens, {text.count(chr(10)):,} lines"))

    rows.append(("whole file: transformers `hf.encode(' ' + text)`",
                 f"{median_ms(lambda: hf.encode(' ' + text, add_special_tokens=False), args.repeat):.1f} ms"))
    raw = tok._text
    rows.append(("whole file: `tokenizers` encode, no cache",
                 f"{median_ms(lambda: raw.encode('▁' + text, add_special_tokens=False), args.repeat):.1f} ms"))

    def cold() -> None:
        clear_cache(tok)
        tok.encode(text)

    rows.append(("whole file: wrapper encode, cold line cache", f"{median_ms(cold, args.repeat):.1f} ms"))

    # a keystroke in the middle: prefix = text[:cursor] grows by one typed character, suffix unchanged
    cursor = text.index("\n", len(text) // 2) - 5
    typed = "value = compute(x)"
    clear_cache(tok)
    tok.encode(text[:cursor])
    tok.encode(text[cursor:], leading_space=False)
    per_key = []
    per_key_raw = []
    for k in range(1, len(typed) + 1):
        prefix = text[:cursor] + typed[:k]
        suffix = text[cursor:]
        t0 = time.perf_counter()
        tok.encode(prefix)
        tok.encode(suffix, leading_space=False)
        t1 = time.perf_counter()
        raw.encode("▁" + prefix, add_special_tokens=False)
        raw.encode(suffix, add_special_tokens=False)
        t2 = time.perf_counter()
        per_key.append((t1 - t0) * 1000)
        per_key_raw.append((t2 - t1) * 1000)
    rows.append(("keystroke (prefix + suffix of the file): `tokenizers` directly",
                 f"{statistics.median(per_key_raw):.2f} ms"))
    rows.append(("keystroke (prefix + suffix of the file): wrapper, warm line cache",
                 f"{statistics.median(per_key):.2f} ms"))

    snippets = [text[i:i + 400] for i in range(0, min(len(text), 80_000), 400)]
    def count_cold() -> None:
        clear_cache(tok)
        for s in snippets:
            tok.count(s)

    def count_raw() -> None:
        for s in snippets:
            len(raw.encode("▁" + s, add_special_tokens=False))

    rows.append((f"count {len(snippets)} snippets of 400 chars: `tokenizers` directly",
                 f"{median_ms(count_raw, args.repeat):.1f} ms"))
    rows.append((f"count {len(snippets)} snippets of 400 chars: wrapper, cold cache",
                 f"{median_ms(count_cold, args.repeat):.1f} ms"))
    rows.append((f"count {len(snippets)} snippets of 400 chars: wrapper, counted before (retrieval re-ranks)",
                 f"{median_ms(lambda: [tok.count(s) for s in snippets], args.repeat):.1f} ms"))

    ids = tok.encode(text, leading_space=False)[:4000]

    def stream() -> None:
        s = StreamDetokenizer(tok)
        for i in ids:
            s.push(i)
        s.flush()

    def naive() -> None:  # re-decode everything after each token: O(n²)
        for k in range(1, len(ids) + 1, 1):
            tok.decode(ids[:k])

    stream_ms = median_ms(stream, 3)
    naive_ms = median_ms(naive, 1)
    rows.append((f"stream {len(ids)} tokens: StreamDetokenizer.push",
                 f"{stream_ms:.0f} ms ({stream_ms / len(ids) * 1000:.1f} µs/token)"))
    rows.append((f"stream {len(ids)} tokens: re-decode whole output per token",
                 f"{naive_ms:.0f} ms ({naive_ms / len(ids) * 1000:.1f} µs/token)"))

    import tokenizers
    import transformers

    env = (f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
           f"tokenizers {tokenizers.__version__}, transformers {transformers.__version__}; "
           f"tokenizer: {args.tokenizer.name}; medians of {args.repeat} runs; "
           f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    lines = ["| measurement | result |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]]
    report = "\n".join(lines)
    print(env)
    print(report)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(
            "# Tokenizer speed\n\n"
            f"Command: `python bench/tokenizer_speed.py --write {args.write}`\n\n"
            f"Environment: {env}. Shared 2-core machine, other jobs running: absolute numbers are noisy, the "
            "ratios are the point.\n\n" + report + "\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
