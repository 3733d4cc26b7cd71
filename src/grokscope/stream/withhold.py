"""Randomised withholding (``grokscope prepare --withhold FRACTION``): a seeded, paradigm-stratified
share of the benchmark's critical phrases never reaches the token stream.

1. **Assignment** (:func:`assign_withheld`): every distinct critical phrase of the phrases table
   belongs to one stratum, the paradigm (``uid``) with most of its pairs (ties: the first uid in
   sort order). In each stratum exactly ``round(fraction * n)`` phrases are drawn without
   replacement by a ``numpy`` RNG seeded with ``[seed, WITHHOLD_STREAM]`` (its own stream of the
   prepare seed, so the document shuffle does not change the coin and vice versa).
2. **Removal** (:class:`SentenceFilter`): before tokenization, every sentence of every document
   that holds a surface form the exposure stage searches for a withheld phrase
   (:func:`grokscope.exposure.search.variant_texts` over all :data:`~grokscope.core.config.VARIANTS`)
   is dropped, so the text stays grammatical. A form matches where the exposure engine would:
   the exact characters, not followed by a letter/digit, and (for a form that begins with a
   letter/digit) not preceded by one — or followed by one where the stream's tokens end right
   after the form ("this sketch|book"), since a row cut there leaves the form's tokens at a row
   end, where the exposure engine counts them. An occurrence that spans a sentence boundary drops every
   sentence it touches; removal is repeated on the remaining text until no form occurs, so no
   occurrence is created by joining what is left.

Occurrences are found through an index keyed on the first two letter/digit runs of each form
(lower-cased), so a document is read once whatever the number of phrases.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grokscope.core.errors import DataError

WITHHOLD_STREAM = 2  # the prepare seed's RNG stream for the coin (0: documents, 1: rows)
WITHHELD_FILE = "withheld.parquet"
# what a sentence filter removes; a stream withheld under another rule is prepared again, not reused
FILTER_RULE = "whole-word forms + forms cut at a token end (row-end residue)"
CutAfter = Callable[[str, int, int], bool]  # (text, start, end) -> a token of text[start:] ends at end
_RUN = re.compile(r"[^\W_]+")  # a run of letters/digits (the exposure engine's word characters)
# a sentence ends after . ! ? (and closing quotes/brackets) followed by whitespace, or at a line end
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+|\n+")


# ---------------------------------------------------------------------------------------------
# assignment
# ---------------------------------------------------------------------------------------------
def assign_withheld(pairs: Any, fraction: float, seed: int) -> Any:
    """One row per distinct critical phrase of the supported pairs of ``pairs`` (a phrases table):
    ``phrase``, ``uid`` (its stratum), ``n_pairs``, ``withheld`` (bool), ``forms`` (the texts removed:
    the union over its pairs of the surface forms the exposure stage searches — from the table's
    ``good_forms``, so a phrase that begins its sentence also goes lower-cased), sorted by uid, phrase."""
    import pandas as pd

    if not 0.0 <= fraction <= 1.0:
        raise DataError(f"withhold fraction must be in [0, 1], got {fraction}")
    for col in ("uid", "critical_phrase", "supported"):
        if col not in pairs.columns:
            raise DataError(f"phrases table for --withhold lacks the column {col!r}; expected the output of "
                            "`grokscope phrases`")
    ok = pairs[pairs["supported"].astype(bool)]
    ok = ok[ok["critical_phrase"].fillna("").astype(str).str.strip() != ""]
    counts = (ok.assign(phrase=ok["critical_phrase"].astype(str).str.strip())
              .groupby(["phrase", "uid"]).size().rename("n").reset_index())
    counts = counts.sort_values(["phrase", "n", "uid"], ascending=[True, False, True], kind="stable")
    table = (counts.groupby("phrase", sort=True).agg(uid=("uid", "first"), n_pairs=("n", "sum")).reset_index()
             .sort_values(["uid", "phrase"], kind="stable").reset_index(drop=True))
    rng = np.random.default_rng([int(seed), WITHHOLD_STREAM])
    withheld = np.zeros(len(table), dtype=bool)
    for _, idx in table.groupby("uid", sort=True).indices.items():
        k = int(round(fraction * idx.size))
        withheld[rng.choice(idx, size=k, replace=False)] = True
    table["withheld"] = withheld
    table["forms"] = _forms_per_phrase(ok, table["phrase"].tolist())
    return pd.DataFrame(table[["phrase", "uid", "n_pairs", "withheld", "forms"]])


def _forms_per_phrase(pairs: Any, phrases: list[str]) -> list[list[str]]:
    """The searched texts of each phrase: the union, in order, over the pairs that hold it."""
    from grokscope.core.config import VARIANTS
    from grokscope.exposure.search import variant_texts

    texts: dict[str, list[str]] = {p: [] for p in phrases}
    has_forms = "good_forms" in pairs.columns
    for phrase, forms in zip(pairs["critical_phrase"].astype(str).str.strip(),
                             pairs["good_forms"] if has_forms else [None] * len(pairs)):
        f = list(forms) if forms is not None and len(forms) else None
        for t in variant_texts(phrase, VARIANTS, f):
            if t not in texts[phrase]:
                texts[phrase].append(t)
    return [texts[p] for p in phrases]


# ---------------------------------------------------------------------------------------------
# removal
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Form:
    text: str
    phrase: int  # index into SentenceFilter.phrases
    offset: int  # where its first letter/digit run starts
    left_word: bool  # begins with a letter/digit: the char before must not be one
    right_word: bool  # ends with a letter/digit: the char after must not be one


def _key(runs: Sequence[str]) -> tuple[str, ...]:
    return tuple(r.lower() for r in runs[:2])


def _prefix_key(runs: Sequence[str]) -> tuple[str, ...]:
    """The key of a form of at most two words by its last word's first two letters (lower-cased)."""
    *head, last = [r.lower() for r in runs[:2]]
    return (*head, last[:2])


class SentenceFilter:
    """Drops the sentences of a text that hold a surface form of any of ``phrases``."""

    def __init__(self, phrases: Sequence[str], variants: Sequence[str] | None = None,
                 texts: Sequence[Sequence[str]] | None = None) -> None:
        """``texts[i]``: the surface forms of ``phrases[i]`` to remove (default: those of the phrase
        as a mid-text phrase, :func:`~grokscope.exposure.search.variant_texts`)."""
        from grokscope.core.config import VARIANTS
        from grokscope.exposure.search import variant_texts

        self.phrases = tuple(phrases)
        self.index: dict[tuple[str, ...], list[_Form]] = {}
        self.prefix_index: dict[tuple[str, ...], list[_Form]] = {}  # forms of <= 2 words, by the last one's start
        self._firsts: set[str] = set()  # the first word of every key
        self._heads1: set[str] = set()  # prefix keys' first parts: one-word forms' first letters, ...
        self._heads2: set[str] = set()  # ... two-word forms' first words (a cheap test before a lookup)
        for i, p in enumerate(self.phrases):
            for text in (texts[i] if texts is not None else variant_texts(p, variants or VARIANTS)):
                runs = list(_RUN.finditer(text))
                if not runs:
                    raise DataError(f"withheld phrase {p!r} has no letter or digit: it cannot be searched as a word")
                form = _Form(text, i, runs[0].start(), text[0].isalnum(), text[-1].isalnum())
                words = [m.group() for m in runs]
                self.index.setdefault(_key(words), []).append(form)
                self._firsts.add(words[0].lower())
                if len(words) <= 2 and form.right_word:  # its key's last word may go on ("sketch|book")
                    pkey = _prefix_key(words)
                    self.prefix_index.setdefault(pkey, []).append(form)
                    (self._heads2 if len(words) == 2 else self._heads1).add(pkey[0])

    def occurrences(self, text: str, cut_after: CutAfter | None = None) -> list[tuple[int, int, int]]:
        """``(start, end, phrase)`` of every occurrence of a form in ``text`` (exposure's whole-word rule).

        With ``cut_after`` (whether the stream's tokens of ``text[start:]`` have a token ending at
        ``end``), a form followed by a letter/digit also counts where a token ends right after it
        ("this sketch|book"): a row of the packed stream may be cut there, and at a row end the
        exposure engine cannot see that the word goes on, so it counts the form's tokens as seen."""
        runs = [(m.start(), m.group().lower()) for m in _RUN.finditer(text)]
        out = []
        firsts, heads1, heads2 = self._firsts, self._heads1, self._heads2
        for i, (pos, word) in enumerate(runs):
            one_word_prefix = cut_after is not None and (word[:2] in heads1 or word[:1] in heads1)
            if word not in firsts and not one_word_prefix:
                continue  # most words begin no form: one set test
            after = [runs[i + 1][1]] if i + 1 < len(runs) else []
            for key in [(word,)] + [(word, w) for w in after]:
                for f in self.index.get(key, ()):
                    a, b = self._match(text, pos, f)
                    if a < 0:
                        continue
                    if f.right_word and b < len(text) and text[b].isalnum() and \
                            (cut_after is None or not cut_after(text, a, b)):
                        continue
                    out.append((a, b, f.phrase))
            if cut_after is None:
                continue
            # a form whose last word the text continues ("this sketch" in "this sketchbook"): the
            # whole-word keys above cannot reach it; its start, a token end after it, can
            # (a last word of one letter has a one-letter key: look up both lengths)
            pkeys: set[tuple[str, ...]] = set()
            if one_word_prefix:
                pkeys |= {_prefix_key([word]), _prefix_key([word[:1]])}
            if after and word in heads2:
                pkeys |= {_prefix_key([word, after[0]]), _prefix_key([word, after[0][:1]])}
            for pkey in pkeys:
                for f in self.prefix_index.get(pkey, ()):
                    a, b = self._match(text, pos, f)
                    if a < 0 or b >= len(text) or not text[b].isalnum():
                        continue  # no match, or a whole-word one (found above)
                    if cut_after(text, a, b):
                        out.append((a, b, f.phrase))
        return out

    @staticmethod
    def _match(text: str, pos: int, f: _Form) -> tuple[int, int]:
        """Where form ``f`` lies in ``text`` if its first word starts at ``pos`` and nothing word-like
        comes before it (``(-1, -1)``: it does not)."""
        a = pos - f.offset
        if a < 0 or not text.startswith(f.text, a) or (f.left_word and a > 0 and text[a - 1].isalnum()):
            return -1, -1
        return a, a + len(f.text)

    def filter(self, text: str, cut_after: CutAfter | None = None) -> tuple[str, list[tuple[str, set[int]]]]:
        """``text`` without the sentences that hold a form, and the removed sentences with the
        phrases that hit each. Repeats until the remaining text holds no form. ``cut_after``: see
        :meth:`occurrences`."""
        removed: list[tuple[str, set[int]]] = []
        while True:
            hits = self.occurrences(text, cut_after)
            if not hits:
                return text, removed
            spans = sentence_spans(text)
            starts = np.array([s for s, _ in spans], dtype=np.int64)
            hit_by: dict[int, set[int]] = {}
            for a, b, p in hits:
                while text[a].isspace():  # a form's leading space belongs to the sentence before: not hit
                    a += 1
                first = int(np.searchsorted(starts, a, side="right")) - 1
                last = int(np.searchsorted(starts, b - 1, side="right")) - 1
                for k in range(first, last + 1):
                    hit_by.setdefault(k, set()).add(p)
            removed += [(text[spans[k][0]:spans[k][1]], hit_by[k]) for k in sorted(hit_by)]
            text = "".join(text[s:e] for k, (s, e) in enumerate(spans) if k not in hit_by)


def token_ends_at(backend: Any, text: str, a: int, b: int) -> bool:
    """Whether ``backend`` (a ``tokenizers`` tokenizer) ends a token at ``b`` in ``text[a:]``. Only
    the words from ``a`` to the end of the word around ``b`` are encoded: a byte-level BPE splits
    text into words before merging, so their tokens are those of the whole document."""
    end = b
    while end < len(text) and text[end].isalnum():
        end += 1
    return any(e == b - a for _, e in backend.encode(text[a:end], add_special_tokens=False).offsets)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` of each sentence of ``text``, its trailing whitespace included; they tile ``text``."""
    spans, pos = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.end() > pos:
            spans.append((pos, m.end()))
            pos = m.end()
    if pos < len(text) or not spans:
        spans.append((pos, len(text)))
    return spans


# ---------------------------------------------------------------------------------------------
# what was removed (kept in the pass-1 progress state, so a resumed run counts the same)
# ---------------------------------------------------------------------------------------------
@dataclass
class Withholding:
    """The filter plus the strata of its phrases, applied to batches of documents in pass 1."""

    filter: SentenceFilter
    strata: tuple[str, ...]  # the uid of each phrase of the filter

    def apply(self, backend: Any, texts: list[str], stats: dict[str, Any]) -> list[str]:
        """The texts with their withheld sentences dropped; adds to ``stats`` (JSON-able):
        ``sentences``, ``tokens`` (of the dropped sentences, encoded alone), and per phrase /
        per stratum ``[sentences, tokens]`` (a sentence hit by several counts for each)."""
        cut_after = functools.partial(token_ends_at, backend)
        kept, dropped = [], []
        for t in texts:
            k, rem = self.filter.filter(t, cut_after)
            kept.append(k)
            dropped += rem
        if not dropped:
            return kept
        encs = backend.encode_batch_fast([s for s, _ in dropped], add_special_tokens=False)
        per_phrase = stats.setdefault("per_phrase", {})
        per_stratum = stats.setdefault("per_stratum", {})
        for (_, phrases), enc in zip(dropped, encs):
            n = len(enc.ids)
            stats["sentences"] = stats.get("sentences", 0) + 1
            stats["tokens"] = stats.get("tokens", 0) + n
            for p in phrases:
                row = per_phrase.setdefault(str(p), [0, 0])
                row[0] += 1
                row[1] += n
            for u in {self.strata[p] for p in phrases}:
                row = per_stratum.setdefault(u, [0, 0])
                row[0] += 1
                row[1] += n
        return kept


def withholding_for(table: Any) -> Withholding:
    """The :class:`Withholding` of the withheld rows of an :func:`assign_withheld` table."""
    rows = table[table["withheld"]]
    texts = [list(f) for f in rows["forms"]] if "forms" in rows.columns else None
    return Withholding(SentenceFilter(rows["phrase"].tolist(), texts=texts), tuple(rows["uid"].tolist()))


def withheld_table(table: Any, stats: dict[str, Any]) -> Any:
    """The assignment table with ``sentences_removed`` / ``tokens_removed`` per withheld phrase."""
    out = table.copy()
    sent = np.zeros(len(out), dtype=np.int64)
    toks = np.zeros(len(out), dtype=np.int64)
    rows = np.flatnonzero(out["withheld"].to_numpy())
    for p, (s, t) in stats.get("per_phrase", {}).items():
        sent[rows[int(p)]] = s
        toks[rows[int(p)]] = t
    out["sentences_removed"] = sent
    out["tokens_removed"] = toks
    return out


# ---------------------------------------------------------------------------------------------
# what prepare calls
# ---------------------------------------------------------------------------------------------
def phrases_file(path: str) -> Path:
    """``path`` itself (a phrases.parquet) or the phrases table of the study directory ``path``."""
    from grokscope.core.store import Study

    p = Path(path)
    return p if p.suffix == ".parquet" else Study(p).phrases_path


def load_assignment(fraction: float, seed: int, phrases: str) -> tuple[Any, dict[str, Any]]:
    """The assignment table of ``phrases`` and the key that enters the prepare inputs."""
    import pandas as pd

    from grokscope.core import store

    path = phrases_file(phrases)
    if not path.exists():
        raise DataError(f"--withhold {fraction}: no phrases table at {path}; make it first (grokscope phrases "
                        "--benchmark BENCHMARK --out STUDY) or pass --phrases STUDY")
    try:
        pairs = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input
        raise DataError(f"{path}: not a readable phrases table ({e})") from None
    table = assign_withheld(pairs, fraction, seed)
    forms_text = sorted(t for forms in table.loc[table["withheld"], "forms"] for t in forms)
    key = {"fraction": fraction, "seed": int(seed), "phrases_sha256": store.file_sha256(path),
           "forms_sha256": hashlib.sha256(json.dumps(forms_text).encode()).hexdigest(), "rule": FILTER_RULE}
    return table, key


def manifest_entry(table: Any, stats: dict[str, Any], key: dict[str, Any], kept_tokens: int) -> dict[str, Any]:
    """What the manifest records of the withholding: the key (fraction, seed, input hashes), the
    withheld and kept phrase counts, sentences and tokens removed, and the share per stratum."""
    total = kept_tokens + int(stats.get("tokens", 0))
    strata = {}
    for uid, part in table.groupby("uid", sort=True):
        s, t = stats.get("per_stratum", {}).get(uid, [0, 0])
        strata[uid] = {"phrases": len(part), "withheld": int(part["withheld"].sum()), "sentences_removed": s,
                       "tokens_removed": t, "token_share_removed": t / total if total else 0.0}
    return {**key, "table": WITHHELD_FILE, "n_phrases": len(table), "n_withheld": int(table["withheld"].sum()),
            "sentences_removed": int(stats.get("sentences", 0)), "tokens_removed": int(stats.get("tokens", 0)),
            "token_share_removed": int(stats.get("tokens", 0)) / total if total else 0.0, "per_paradigm": strata}


def add_to_inputs(inputs: dict[str, Any], fraction: float, seed: int, phrases: str) -> Any:
    """The assignment table when ``fraction`` > 0 (its key put in ``inputs["withhold"]``), else None."""
    if fraction <= 0:
        return None
    table, inputs["withhold"] = load_assignment(fraction, seed, phrases)
    return table


def record(tokens_dir: Path, manifest: dict[str, Any], table: Any, state: dict[str, Any]) -> None:
    """Write ``withheld.parquet`` and the manifest's ``withhold`` entry (nothing when ``table`` is None)."""
    from grokscope.core import store

    if table is None:
        return
    store.write_parquet(tokens_dir / WITHHELD_FILE, withheld_table(table, state["withheld"]))
    manifest["withhold"] = manifest_entry(table, state["withheld"], manifest["inputs"]["withhold"], state["n_tokens"])
