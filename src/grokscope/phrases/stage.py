"""Critical phrases: for every minimal pair, the smallest contiguous span of the good sentence
that covers every word differing from the bad sentence, the **critical word** (where
acceptability is decided) and the **context word** (what it depends on).

How a pair is annotated:

1. Both sentences are split into words (:mod:`grokscope.phrases.words`) with exact character
   spans (punctuation split off; contractions such as "hasn't" and possessives such as
   "Lucille's" stay one word).
2. The word sequences are aligned by a longest common subsequence (case-folded, so a
   capitalised sentence-initial word matches its lower-case self; among equally long ones,
   the one whose words move least). Words outside it are the *differing words*; for a
   reordered (lexically identical) pair they are the words out of place.
3. The paradigm's rule (:mod:`grokscope.phrases.rules`) names a selector
   (:mod:`grokscope.phrases.selectors`) for the critical and the context word, read from
   BLiMP's lexicon classes (:mod:`grokscope.data.lexicon`) and the pair's ``one_prefix_*`` /
   ``two_prefix_*`` metadata. Explicit ``critical`` / ``context`` spans of a user benchmark
   override the rule.
4. Phrase (good) = span from the first to the last of {differing words, critical, context}.
   The bad phrase covers the bad sentence's differing words, its critical and context words
   and the bad-sentence positions of every shared word of the good phrase.

Writes ``study/phrases.parquet`` (columns in docs/CONTRACTS.md) and prints a coverage table.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grokscope.core.config import StudyConfig
from grokscope.core.errors import DataError, MissingStageError
from grokscope.core.stage import CommandLine, Flag, Stage
from grokscope.core.store import Study
from grokscope.data import lexicon as lx
from grokscope.data.surface_forms import capitalised_words, surface_forms
from grokscope.phrases.rules import GENERIC_RULE, RULES, Rule
from grokscope.phrases.selectors import NotFound, run_selector
from grokscope.phrases.words import WORD_RE, Alignment, Side, Span, align, make_side, split_words

RULES_VERSION = "3"  # bump when a rule or selector changes: stale phrases.parquet is redone


COLUMNS = [
    "uid", "pair_id", "phenomenon", "good", "bad", "supported", "reason", "rule",
    "critical_phrase", "phrase_start", "phrase_end",
    "bad_phrase", "bad_phrase_start", "bad_phrase_end",
    "critical_word", "critical_start", "critical_end",
    "bad_critical_word", "bad_critical_start", "bad_critical_end",
    "context_word", "context_start", "context_end",
    "bad_context_start", "bad_context_end",
    "good_forms", "bad_forms",
]


# span name -> the column holding its text (None: only the span is recorded); spans are the
# character ranges [NAME_start, NAME_end) of the good sentence, or of the bad one for bad_*
_SPANS: dict[str, str | None] = {
    "phrase": "critical_phrase", "bad_phrase": "bad_phrase", "critical": "critical_word",
    "bad_critical": "bad_critical_word", "context": "context_word", "bad_context": None,
}


@dataclass
class PhraseRecord:
    """The annotation of one pair: its columns of :data:`COLUMNS` beyond the pair's own (character
    spans ``[start, end)``; -1 and "" where absent)."""

    supported: bool = False
    reason: str = ""
    rule: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    def put(self, name: str, side: Side, span: Span) -> None:
        """Record span ``name`` (see :data:`_SPANS`) of ``side``: its characters and its text."""
        self.values[f"{name}_start"], self.values[f"{name}_end"] = side.char_span(span)
        text_column = _SPANS[name]
        if text_column:
            self.values[text_column] = side.text_of(span)

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {"supported": self.supported, "reason": self.reason, "rule": self.rule,
                               "good_forms": [], "bad_forms": []}
        for name, text_column in _SPANS.items():
            if text_column:
                out[text_column] = ""
            out[f"{name}_start"] = out[f"{name}_end"] = -1
        out.update(self.values)
        return out

    def __getattr__(self, name: str) -> Any:
        """A column by name (``rec.critical_phrase``), as in the table."""
        if name.startswith("__") or name == "values":
            raise AttributeError(name)
        row = self.row()
        if name in row:
            return row[name]
        raise AttributeError(name)


def _explicit_span(side: Side, start: int, end: int) -> Span | None:
    if start < 0:
        return None
    first = side.word_at_char(start)
    last = side.word_at_char(end - 1)
    if first >= side.n or last < first:
        raise NotFound(f"explicit span [{start}, {end}) covers no word")
    return (first, last)


def _to_bad(span: Span, al: Alignment, good: Side, bad: Side, spec: str | None,
            moved: bool = False) -> Span:
    """The bad-sentence word for a good-sentence selection: its aligned partner when shared;
    for a word the rule says only moves (``moved``), the same word among the bad sentence's
    differing words; else the same selector run on the bad sentence (explicit spans: the
    differing block)."""
    a, b = al.good_to_bad[span[0]], al.good_to_bad[span[1]]
    if a >= 0 and b >= 0:
        return (a, b)
    if moved and span[0] == span[1]:
        word = good.lower[span[0]]
        rank = sum(1 for i in good.diffs if i < span[0] and good.lower[i] == word)
        same = [j for j in bad.diffs if bad.lower[j] == word]
        if same:
            j = same[min(rank, len(same) - 1)]
            return (j, j)
    if spec is not None:
        return run_selector(spec, bad)
    j1 = min(al.good_block[i][0] for i in range(span[0], span[1] + 1))
    j2 = max(al.good_block[i][1] for i in range(span[0], span[1] + 1))
    words = [j for j in range(j1, j2) if bad.is_word[j]]
    if not words:
        raise NotFound("a bad-sentence counterpart of the explicit span")
    return (words[0], words[-1])


@dataclass(frozen=True)
class Selection:
    """Word-index ranges of the critical and context word in both sentences."""

    good_critical: Span
    bad_critical: Span
    good_context: Span | None
    bad_context: Span | None


def select_words(rule: Rule, good: Side, bad: Side, al: Alignment,
                 x_crit: Span | None = None, x_ctx: Span | None = None) -> Selection:
    """Critical and context word by ``rule`` (or the explicit spans), in good and bad.
    Raises :class:`NotFound`."""
    crit_spec = None if x_crit else rule.critical
    g_crit = x_crit or run_selector(rule.critical, good)
    good.critical = g_crit
    b_crit = _to_bad(g_crit, al, good, bad, crit_spec, rule.critical_moves)
    bad.critical = b_crit
    ctx_spec = None if x_ctx else rule.context
    g_ctx = x_ctx or (run_selector(rule.context, good) if rule.context else None)
    if g_ctx is None:
        b_ctx = None
    elif rule.context_each_side and ctx_spec is not None:
        b_ctx = run_selector(ctx_spec, bad)
    else:
        b_ctx = _to_bad(g_ctx, al, good, bad, ctx_spec)
    return Selection(g_crit, b_crit, g_ctx, b_ctx)


def phrase_spans(good: Side, bad: Side, al: Alignment, sel: Selection) -> tuple[Span, Span]:
    """Word ranges of the phrase: good = first to last of {differing words, critical,
    context}; bad = its differing words, critical and context words and the bad positions of
    the good phrase's shared words."""
    need = [*good.diffs, *sel.good_critical, *(sel.good_context or ())]
    lo, hi = min(need), max(need)
    bneed = [*bad.diffs, *sel.bad_critical, *(sel.bad_context or ())]
    bneed += [al.good_to_bad[i] for i in range(lo, hi + 1) if al.good_to_bad[i] >= 0 and good.is_word[i]]
    return (lo, hi), (min(bneed), max(bneed))


def _forms(side: Side, span: Span, capitalised: frozenset[str]) -> list[str]:
    """Surface forms of ``side``'s words ``span`` (:func:`grokscope.data.surface_forms.surface_forms`)."""
    first = next((i for i in range(side.n) if side.is_word[i]), side.n)
    return surface_forms(side.text_of(span), span[0] <= first, capitalised)


def annotate_pair(
    good_text: str, bad_text: str, rule: Rule, lexicon: lx.Lexicon, meta: dict[str, Any] | None = None,
    explicit_critical: tuple[int, int] = (-1, -1), explicit_context: tuple[int, int] = (-1, -1),
    capitalised: frozenset[str] | None = None,
) -> PhraseRecord:
    """Critical phrase of one pair under ``rule`` (explicit ``[start, end)`` character spans
    of the good sentence override its selectors; (-1, -1) = not given). ``capitalised``: words
    that keep their capital mid-sentence (default: the lexicon's), for the surface forms."""
    rec = PhraseRecord(rule=rule.name)
    if not rule.supported:
        rec.reason = rule.reason
        return rec
    good = make_side("good", good_text, lexicon, meta or {})
    bad = make_side("bad", bad_text, lexicon, meta or {})
    al = align(good, bad)
    if not good.diffs and not bad.diffs:
        rec.reason = "the sentences differ only in capitalisation or punctuation: no differing word"
        return rec
    try:
        x_crit = _explicit_span(good, *explicit_critical)
        x_ctx = _explicit_span(good, *explicit_context)
        sel = select_words(rule, good, bad, al, x_crit, x_ctx)
    except NotFound as e:
        rec.reason = f"rule {rule.name}: could not find {e}"
        return rec
    if x_crit or x_ctx:
        rec.rule = "explicit" if (x_crit and x_ctx) else f"{rule.name}+explicit"
    g_crit, g_ctx = sel.good_critical, sel.good_context
    if g_ctx is not None and not (g_ctx[1] < g_crit[0] or g_crit[1] < g_ctx[0]):
        rec.reason = f"rule {rule.name}: critical and context word coincide ({good.text_of(g_crit)!r})"
        return rec
    g_phrase, b_phrase = phrase_spans(good, bad, al, sel)
    rec.supported = True
    rec.put("phrase", good, g_phrase)
    rec.put("bad_phrase", bad, b_phrase)
    rec.put("critical", good, g_crit)
    rec.put("bad_critical", bad, sel.bad_critical)
    caps = lexicon.capitalised if capitalised is None else capitalised
    rec.values["good_forms"] = _forms(good, g_phrase, caps)
    rec.values["bad_forms"] = _forms(bad, b_phrase, caps)
    if g_ctx is not None and sel.bad_context is not None:
        rec.put("context", good, g_ctx)
        rec.put("bad_context", bad, sel.bad_context)
    return rec


def rule_for(uid: str) -> Rule:
    return RULES.get(uid, GENERIC_RULE)


_META_KEYS = (
    "one_prefix_prefix", "one_prefix_word_good", "one_prefix_word_bad",
    "two_prefix_prefix_good", "two_prefix_prefix_bad", "two_prefix_word",
)


def extract_phrases(pairs: Any, lexicon: lx.Lexicon, progress: bool = False) -> Any:
    """``phrases.parquet`` rows (a DataFrame, benchmark order) for a :func:`load_pairs` frame."""
    import pandas as pd

    n = len(pairs)
    cols = {k: pairs[k].tolist() if k in pairs else [None] * n for k in _META_KEYS}
    spans = {
        k: pairs[k].tolist() if k in pairs else [-1] * n
        for k in ("explicit_critical_start", "explicit_critical_end",
                  "explicit_context_start", "explicit_context_end")
    }
    uids, goods, bads = pairs["uid"].tolist(), pairs["good"].tolist(), pairs["bad"].tolist()
    caps = capitalised_words(([w for w, _, _ in split_words(t)] for t in goods + bads), lexicon.capitalised)
    it: Sequence[int] | Any = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="phrases", unit="pair", mininterval=0.5, file=sys.stderr)
    out: list[PhraseRecord] = []
    for i in it:
        meta = {k: cols[k][i] for k in _META_KEYS}
        out.append(annotate_pair(
            goods[i], bads[i], rule_for(uids[i]), lexicon, meta,
            (int(spans["explicit_critical_start"][i]), int(spans["explicit_critical_end"][i])),
            (int(spans["explicit_context_start"][i]), int(spans["explicit_context_end"][i])), caps,
        ))
    df = pd.DataFrame.from_records([r.row() for r in out])
    for key in ("uid", "pair_id", "phenomenon", "good", "bad"):
        df[key] = pairs[key].to_numpy()
    df = df[COLUMNS]
    for c in COLUMNS:
        if c.endswith(("_start", "_end")):
            df[c] = df[c].astype("int64")
    df["supported"] = df["supported"].astype(bool)
    return df


def coverage_table(df: Any) -> Any:
    """Pairs with a phrase / pairs and mean phrase length in words, per phenomenon and paradigm."""
    import pandas as pd

    d = df.assign(
        n_words=[len([t for t in WORD_RE.findall(p) if t[0].isalnum()]) if s else 0
                 for p, s in zip(df["critical_phrase"], df["supported"])]
    )
    rows = []
    for level, keys in (("phenomenon", ["phenomenon"]), ("paradigm", ["phenomenon", "uid"])):
        for name, g in d.groupby(keys, sort=True):
            name = name if isinstance(name, tuple) else (name,)
            sup = g[g["supported"]]
            rows.append({
                "level": level, "phenomenon": name[0], "paradigm": name[1] if len(name) > 1 else "",
                "pairs": len(g), "supported": int(g["supported"].sum()),
                "coverage": float(g["supported"].mean()),
                "mean_words": float(sup["n_words"].mean()) if len(sup) else float("nan"),
                "reason": "" if len(sup) == len(g) else g.loc[~g["supported"], "reason"].mode().iat[0],
            })
    rows.append({"level": "all", "phenomenon": "all", "paradigm": "", "pairs": len(d),
                 "supported": int(d["supported"].sum()), "coverage": float(d["supported"].mean()),
                 "mean_words": float(d.loc[d["supported"], "n_words"].mean()), "reason": ""})
    return pd.DataFrame(rows)


def format_coverage(table: Any) -> str:
    lines = [f"{'phenomenon / paradigm':<58} {'phrase/pairs':>13} {'cover':>7} {'words':>6}"]
    for phen in table.loc[table["level"] == "phenomenon", "phenomenon"]:
        r = table[(table["level"] == "phenomenon") & (table["phenomenon"] == phen)].iloc[0]
        lines.append(f"{phen:<58} {r.supported:>6}/{r.pairs:<6} {r.coverage:>7.1%} {r.mean_words:>6.2f}")
        sub = table[(table["level"] == "paradigm") & (table["phenomenon"] == phen)]
        for r in sub.itertuples():
            note = f"  [{r.reason}]" if r.reason else ""
            lines.append(f"  {r.paradigm:<56} {r.supported:>6}/{r.pairs:<6} {r.coverage:>7.1%} "
                         f"{r.mean_words:>6.2f}{note}")
    r = table[table["level"] == "all"].iloc[0]
    lines.append(f"{'all':<58} {r.supported:>6}/{r.pairs:<6} {r.coverage:>7.1%} {r.mean_words:>6.2f}")
    return "\n".join(lines)


def load_lexicon(lexicon: str | Path | None, benchmark: str | Path) -> tuple[lx.Lexicon, str]:
    """The lexicon given, else ``vocabulary.csv`` beside the benchmark, else closed classes only."""
    path = Path(lexicon) if lexicon else lx.default_lexicon_path(benchmark)
    if path is None:
        return lx.Lexicon(), ""
    return lx.Lexicon.load(path), str(path)


def write_phrases(
    benchmark: str | Path, out: str | Path, paradigms: list[str] | None = None,
    pairs_per_paradigm: int = 0, seed: int = 0, skip_invalid: bool = False,
    lexicon: str | Path | None = None, force: bool = False, quiet: bool = False,
) -> Any:
    """Load a benchmark, annotate every pair, write ``out/phrases.parquet``; returns the frame."""
    from grokscope.core import store
    from grokscope.data.benchmark import benchmark_fingerprint, load_pairs

    study = store.Study(out)
    t0 = time.perf_counter()
    pairs = load_pairs(benchmark, paradigms=paradigms, pairs_per_paradigm=pairs_per_paradigm,
                       seed=seed, skip_invalid=skip_invalid)
    for msg in pairs.attrs.get("skipped", []):
        print(f"grokscope phrases: skipped invalid pair: {msg}", file=sys.stderr)
    fp = benchmark_fingerprint(pairs)
    lex, lex_path = load_lexicon(lexicon, benchmark)
    meta = {"benchmark": str(benchmark), "benchmark_fingerprint": fp, "lexicon": lex_path,
            "rules_version": RULES_VERSION, "skipped": len(pairs.attrs.get("skipped", []))}
    if not force and study.has_phrases():
        old = store.read_parquet_metadata(study.phrases_path)
        if old.get("benchmark_fingerprint") == fp and old.get("rules_version") == RULES_VERSION \
                and old.get("lexicon") == lex_path:
            import pandas as pd

            if not quiet:
                print(f"grokscope phrases: {study.phrases_path} is up to date (use --force to redo)")
            return pd.read_parquet(study.phrases_path)
    df = extract_phrases(pairs, lex, progress=not quiet)
    store.write_parquet(study.phrases_path, df, metadata=meta)
    if not quiet:
        print(format_coverage(coverage_table(df)))
        print(f"wrote {study.phrases_path}: {len(df)} pairs, {int(df['supported'].sum())} with a phrase, "
              f"in {time.perf_counter() - t0:.1f}s" + ("" if lex_path else " (no lexicon: closed classes only)"))
    return df


def run(cfg: StudyConfig, study: Study) -> None:
    """Annotate ``[benchmark] path`` into ``study/phrases.parquet`` (resumes: skipped when it
    exists for the same benchmark, rules and lexicon)."""
    b = cfg.benchmark
    if not b.path:
        raise DataError(f"{cfg.source or 'config'}: [benchmark] path is empty; give a BLiMP directory, "
                        "a jsonl file of pairs or 'nyu-mll/blimp'")
    path: str | Path = b.path
    if b.path == "testbed":
        path = study.testbed_file("pairs.jsonl")
        if not path.exists():
            raise MissingStageError("testbed pairs", str(path), "grokscope demo")
    write_phrases(path, study.root, paradigms=b.paradigms or None, pairs_per_paradigm=b.pairs_per_paradigm,
                  seed=cfg.study.seed, skip_invalid=b.skip_invalid, lexicon=b.lexicon or None,
                  force=cfg.options.force)


STAGE = Stage(
    name="phrases", sections=("benchmark",), run=run, inputs=(), outputs=lambda s: [s.phrases_path],
    done=Study.has_phrases, libraries=("pandas",),
    cli=CommandLine(
        flags=(Flag("benchmark.path", "--benchmark", "BLiMP directory of jsonl files, a jsonl file of pairs, or "
                                                     "'nyu-mll/blimp' (hub)", required=True),
               Flag("study.out", "--out", "study directory (writes STUDY/phrases.parquet)", required=True),
               Flag("study.seed", "--seed")),
        force=True),
)
run_stage = STAGE.run_config
