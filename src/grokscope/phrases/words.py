"""Words of a minimal pair and their alignment: each sentence split into words with exact
character spans (punctuation split off; contractions such as "hasn't" and possessives such as
"Lucille's" stay one word), tagged from BLiMP's lexicon, and the two word sequences aligned by
a longest common subsequence (case-folded; among equally long ones, the one whose words move
least). Words outside it are the pair's *differing words*."""
from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grokscope.data import lexicon as lx

WORD_RE = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")


Span = tuple[int, int]  # inclusive word-index range [first, last]


@dataclass
class Side:
    """One sentence of a pair, split into words, tagged, with its differing words."""

    name: str  # "good" | "bad"
    text: str
    words: list[str]
    lower: list[str]
    starts: list[int]
    ends: list[int]
    is_word: list[bool]
    tags: list[frozenset[str]]
    meta: dict[str, Any]
    diffs: list[int] = field(default_factory=list)  # indices of differing words (no punctuation)
    insertions: list[int] = field(default_factory=list)  # where the other sentence has extra words
    critical: Span | None = None

    @property
    def n(self) -> int:
        return len(self.words)

    def word_at_char(self, pos: int) -> int:
        """Index of the word containing character ``pos`` (or the next word)."""
        i = bisect.bisect_right(self.starts, pos) - 1
        if i >= 0 and pos < self.ends[i]:
            return i
        return i + 1

    def char_span(self, span: Span) -> tuple[int, int]:
        return self.starts[span[0]], self.ends[span[1]]

    def text_of(self, span: Span) -> str:
        s, e = self.char_span(span)
        return self.text[s:e]


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Words and punctuation marks with their ``[start, end)`` character spans."""
    return [(m.group(), *m.span()) for m in WORD_RE.finditer(text)]


def make_side(name: str, text: str, lexicon: lx.Lexicon, meta: dict[str, Any]) -> Side:
    toks = split_words(text)
    words = [t[0] for t in toks]
    lower = [w.lower().replace("’", "'") for w in words]
    return Side(
        name=name, text=text, words=words, lower=lower,
        starts=[t[1] for t in toks], ends=[t[2] for t in toks],
        is_word=[w[0].isalnum() or w[0] == "_" for w in words],
        tags=lexicon.tag(lower), meta=meta,
    )


@dataclass
class Alignment:
    good_to_bad: list[int]  # -1 where the good word has no equal partner
    good_block: list[tuple[int, int]]  # for each good token: the [j1, j2) bad range of its opcode


def lcs_pairs(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int]]:
    """Matched index pairs of a longest common subsequence of ``a`` and ``b``. Among the
    longest it takes the one in the fewest contiguous blocks, then the one whose words move
    least (smallest total ``|i - j|``): "the college campus that the Borgias do admire" /
    "what the Borgias do admire the college campus" keeps "the Borgias do admire" whole, and
    "Julia says Kenneth …" / "Kenneth says Julia …" matches "says", not a moved name.
    Remaining ties go to matches nearest the end."""
    n, m = len(a), len(b)
    worst = (-1, 0, 0)
    # best[i][j]: best score (matches, -blocks, -displacement) of a[:i] vs b[:j];
    # ending[i][j]: best score of those that match a[i-1] with b[j-1].
    best = [[(0, 0, 0)] * (m + 1) for _ in range(n + 1)]
    ending = [[worst] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if a[i - 1] == b[j - 1]:
                d = abs(i - j)
                c, g = ending[i - 1][j - 1], best[i - 1][j - 1]
                cont = (c[0] + 1, c[1], c[2] - d) if c[0] >= 0 else worst
                new = (g[0] + 1, g[1] - 1, g[2] - d)
                ending[i][j] = max(cont, new)
            best[i][j] = max(ending[i][j], best[i - 1][j], best[i][j - 1])
    pairs: list[tuple[int, int]] = []
    i, j, in_match = n, m, False
    while i > 0 and j > 0:
        if in_match or best[i][j] == ending[i][j]:
            pairs.append((i - 1, j - 1))
            c, g = ending[i - 1][j - 1], best[i - 1][j - 1]
            d = abs(i - j)
            cur = ending[i][j]
            in_match = c[0] >= 0 and cur == (c[0] + 1, c[1], c[2] - d)
            i, j = i - 1, j - 1
        elif best[i][j] == best[i - 1][j]:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def _opcodes(a: list[str], b: list[str]) -> list[tuple[str, int, int, int, int]]:
    """Edit blocks (like :meth:`difflib.SequenceMatcher.get_opcodes`) from :func:`lcs_pairs`,
    computed after trimming the common prefix and suffix (as diff tools do)."""
    p = 0
    while p < len(a) and p < len(b) and a[p] == b[p]:
        p += 1
    q = 0
    while q < len(a) - p and q < len(b) - p and a[-1 - q] == b[-1 - q]:
        q += 1
    pairs = [(i + p, j + p) for i, j in lcs_pairs(a[p:len(a) - q], b[p:len(b) - q])]
    pairs = [(k, k) for k in range(p)] + pairs + [(len(a) - q + k, len(b) - q + k) for k in range(q)]
    ops: list[tuple[str, int, int, int, int]] = []
    i = j = 0
    for pi, pj in pairs + [(len(a), len(b))]:
        if pi > i or pj > j:
            tag = "replace" if pi > i and pj > j else ("delete" if pi > i else "insert")
            ops.append((tag, i, pi, j, pj))
        if pi < len(a):
            ops.append(("equal", pi, pi + 1, pj, pj + 1))
        i, j = pi + 1, pj + 1
    return ops


def align(good: Side, bad: Side) -> Alignment:
    """Word alignment; fills ``good.diffs`` and ``bad.diffs``."""
    g2b = [-1] * good.n
    gblock: list[tuple[int, int]] = [(0, 0)] * good.n
    for tag, i1, i2, j1, j2 in _opcodes(good.lower, bad.lower):
        if tag == "equal":
            for k in range(i2 - i1):
                g2b[i1 + k] = j1 + k
                gblock[i1 + k] = (j1 + k, j1 + k + 1)
        else:
            good.diffs.extend(i for i in range(i1, i2) if good.is_word[i])
            bad.diffs.extend(j for j in range(j1, j2) if bad.is_word[j])
            if i1 == i2 and any(bad.is_word[j] for j in range(j1, j2)):
                good.insertions.append(i1)
            if j1 == j2 and any(good.is_word[i] for i in range(i1, i2)):
                bad.insertions.append(j1)
            for i in range(i1, i2):
                gblock[i] = (j1, j2)
    return Alignment(g2b, gblock)
