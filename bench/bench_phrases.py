"""Benchmark: critical phrases for every BLiMP pair on one core.

Target (issue 3): all 67,000 pairs in under 10 seconds on one core. The reference measured in
the same run is the floor any annotator pays: read every jsonl line and diff the two sentences'
words with difflib.SequenceMatcher. Both CPU seconds (``time.process_time``, what one core
spends; robust on a shared machine) and wall seconds are printed.

    python bench/bench_phrases.py [--blimp DIR] [--repeat N]
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import time
from pathlib import Path

from grokscope.data.benchmark import load_pairs
from grokscope.phrases import stage as phrases

WORD = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")


def reference(blimp: Path) -> int:
    """Plain loading + word diffing of every pair (no lexicon, no rules)."""
    n = 0
    for f in sorted(blimp.glob("*.jsonl")):
        with f.open(encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                a = WORD.findall(r["sentence_good"].lower())
                b = WORD.findall(r["sentence_bad"].lower())
                difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
                n += 1
    return n


def timed(fn, *args):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - c0, time.perf_counter() - w0


def main() -> None:
    default = Path(os.environ.get("GROKSCOPE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "blimp"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blimp", type=Path, default=default)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = ap.parse_args()

    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeat):
        n_ref, c_ref, w_ref = timed(reference, args.blimp)
        pairs, c_load, w_load = timed(lambda: load_pairs(args.blimp, skip_invalid=True))
        lex, c_lex, w_lex = timed(lambda: phrases.load_lexicon(None, args.blimp)[0])
        df, c_ext, w_ext = timed(phrases.extract_phrases, pairs, lex)
        for name, c, w in (("reference", c_ref, w_ref), ("load_pairs", c_load, w_load),
                           ("lexicon", c_lex, w_lex), ("extract", c_ext, w_ext),
                           ("total", c_load + c_lex + c_ext, w_load + w_lex + w_ext)):
            if name not in best or c < best[name][0]:
                best[name] = (c, w)
    n = len(df)
    print(f"pairs: {n} ({n_ref} jsonl lines; {n_ref - n} skipped as invalid), "
          f"{int(df['supported'].sum())} with a phrase; best of {args.repeat}")
    print(f"{'step':<12} {'cpu s':>8} {'wall s':>8} {'pairs/s (cpu)':>14}")
    for name, (c, w) in best.items():
        print(f"{name:<12} {c:>8.2f} {w:>8.2f} {n / c:>14,.0f}")
    total, ref = best["total"][0], best["reference"][0]
    print(f"phrases total / reference (load + diff) = {total / ref:.2f}x; "
          f"target < 10 s on one core: {'PASS' if total < 10 else 'FAIL'} ({total:.2f} cpu s)")


if __name__ == "__main__":
    main()
