"""Every surface form vs the phrase as cut: what the lower-cased mid-text forms add, per paradigm.

    python bench/bench_forms.py --tokens runs/corpus_gpt2/tokens --phrases runs/blimp_phrases/phrases.parquet

Searches the stream twice for all BLiMP pairs' good and bad phrases: "before" (each phrase as
given is its mid-text form: " There was bound", " There was bound", "There was bound") and
"after" (the phrases table's ``good_forms``/``bad_forms``: " there was bound" added). Prints per
paradigm the pairs whose good or bad counts change, the seen share at the last checkpoint before
and after, and the search times. The speed against the NumPy reference is bench_exposure.py's.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def search(tok, stream, spec, steps, phrases, forms):
    from grokscope.exposure.search import PhraseSearch

    t0 = time.process_time()
    s = PhraseSearch(phrases, tok, eos_id=stream.eos_id, forms=forms)
    found = s.search(spec, steps, progress=False)
    return found, time.process_time() - t0, s.n_sequences


def main() -> None:
    from grokscope.core.tokenizer import load_tokenizer
    from grokscope.exposure.shards import StreamSpec

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="runs/corpus_gpt2/tokens")
    ap.add_argument("--phrases", default="runs/blimp_phrases/phrases.parquet")
    ap.add_argument("--rows-per-step", type=int, default=32)
    ap.add_argument("--out", default="", help="write the per-paradigm table as CSV")
    args = ap.parse_args()
    spec = StreamSpec(args.tokens, rows_per_step=args.rows_per_step)
    stream = spec.open()
    tok = load_tokenizer(stream.tokenizer_dir)
    df = pd.read_parquet(args.phrases)
    last = stream.n_rows // args.rows_per_step
    steps = sorted({0, 1, 10, 100, 1000, 10000, last})
    good, bad = df["critical_phrase"].tolist(), df["bad_phrase"].tolist()
    gf = [list(f) or None for f in df["good_forms"]]
    bf = [list(f) or None for f in df["bad_forms"]]
    res = {}
    for name, forms in (("before", None), ("after", gf + bf)):
        found, cpu, nseq = search(tok, stream, spec, steps, good + bad, forms)
        gi = found.rows_of(good, None if forms is None else gf)
        bi = found.rows_of(bad, None if forms is None else bf)
        res[name] = (found.counts[gi].sum(axis=1), found.counts[bi].sum(axis=1),
                     np.cumsum(found.counts[gi], axis=1)[:, len(steps) - 1])
        print(f"{name}: {nseq:,} token sequences, search {cpu:.2f} CPU-s")
    g0, b0, s0 = res["before"]
    g1, b1, s1 = res["after"]
    assert (g1 >= g0).all() and (b1 >= b0).all(), "more forms can only add occurrences"
    t = pd.DataFrame({"uid": df["uid"], "sup": df["supported"], "changed": (g1 != g0) | (b1 != b0),
                      "good_changed": g1 != g0, "seen_before": s0 > 0, "seen_after": s1 > 0, "g0": g0, "g1": g1})
    t = t[t["sup"]]
    per = t.groupby("uid").agg(pairs=("changed", "size"), changed=("changed", "sum"), good_changed=("good_changed", "sum"),
                               seen_before=("seen_before", "mean"), seen_after=("seen_after", "mean"),
                               good_before=("g0", "sum"), good_after=("g1", "sum"))
    per = per[per["changed"] > 0].sort_values("changed", ascending=False)
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print(per.to_string(float_format=lambda x: f"{x:.3f}"))
    print(f"all: {int(t['changed'].sum()):,} of {len(t):,} supported pairs change; proxy-train at the last step "
          f"{int(t['seen_before'].sum()):,} -> {int(t['seen_after'].sum()):,}; good counts of the changed pairs "
          f"{int(t.loc[t.good_changed, 'g0'].sum()):,} -> {int(t.loc[t.good_changed, 'g1'].sum()):,}")
    if args.out:
        per.to_csv(args.out)


if __name__ == "__main__":
    main()
