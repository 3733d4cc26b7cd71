"""The compiled inner loops of :mod:`grokscope.exposure.engine` (Numba, cached on disk): the trie
walk over a block of rows (``scan``, with the windowed matches of
:class:`grokscope.exposure.engine.WindowRules`) and the open-addressing table fill. Imported only
when a scan runs, so ``import grokscope`` never loads Numba."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def fill(table, new_keys, new_vals, shift, mask):  # pragma: no cover - compiled
    # open addressing, linear probing; table: int64 [2 * slots] of (key, value), key -1 = empty
    mult = np.int64(-7046029254386353131)
    for q in range(new_keys.shape[0]):
        key = new_keys[q]
        h = ((key * mult) >> shift) & mask
        while table[2 * h] != -1:
            h = (h + 1) & mask
        table[2 * h] = key
        table[2 * h + 1] = new_vals[q]


@njit(cache=True, nogil=True)
def scan(rows, row0, vocab, root_child, table, shift, hmask, deep_token, efilter, fshift, fmask, node_seq,
         node_has_child,
         seq_start_check, continues_word, ends_word, tail_index, cont_index, pair_word, check_words, counts,
         first_row, n_win, w_first_ptr, w_first_seqs, w_second_ptr, w_second_windows, w_tokens, eos,
         last_row, last_end):  # pragma: no cover - compiled
    # rows: [n_rows, row_len] token ids (all < vocab); counts/first_row: [n_sequences (+ n_win)]
    # windows (n_win > 0): last_row/last_end [n_phrase_sequences] = row and end of each
    # sequence's latest accepted match; window q counts at id n_phrase + q
    n_rows, row_len = rows.shape
    n_phrase = w_second_ptr.shape[0] - 1
    mult = np.int64(-7046029254386353131)
    fmult = np.int64(-2960836687051489901)
    for r in range(n_rows):
        for i in range(row_len):
            n = root_child[rows[r, i]]
            if n < 0:
                continue
            j = i
            while True:
                s = node_seq[n]
                if s >= 0:
                    ok = True
                    if check_words:
                        if j + 1 < row_len and continues_word[rows[r, j + 1]]:
                            ok = False
                        elif seq_start_check[s] and i > 0 and ends_word[rows[r, i - 1]]:
                            ok = False
                            p = rows[r, i - 1]
                            if cont_index[p] >= 0:  # the end of a character split across tokens
                                if i == 1:  # ... whose start is in the previous row: cut, like a row start
                                    ok = True
                                elif tail_index[rows[r, i - 2]] >= 0:  # decide on the whole character
                                    ok = not pair_word[tail_index[rows[r, i - 2]], cont_index[p]]
                    if ok:
                        counts[s] += 1
                        if first_row[s] < 0:
                            first_row[s] = row0 + r
                        if n_win > 0:
                            for k in range(w_second_ptr[s], w_second_ptr[s + 1]):
                                q = w_second_windows[k]
                                for m in range(w_first_ptr[q], w_first_ptr[q + 1]):
                                    c = w_first_seqs[m]
                                    e = last_end[c]
                                    if last_row[c] != row0 + r or e >= i or i - e > w_tokens:
                                        continue
                                    between = False  # an EOS between the two words?
                                    for g in range(e + 1, i):
                                        if rows[r, g] == eos:
                                            between = True
                                            break
                                    if not between:
                                        counts[n_phrase + q] += 1
                                        if first_row[n_phrase + q] < 0:
                                            first_row[n_phrase + q] = row0 + r
                                        break
                            last_row[s] = row0 + r
                            last_end[s] = j
                if not node_has_child[n]:
                    break
                j += 1
                if j >= row_len:
                    break
                t = rows[r, j]
                if not deep_token[t]:
                    break
                key = np.int64(n) * vocab + np.int64(t)
                b = ((key * fmult) >> fshift) & fmask
                if (efilter[b >> 6] >> (b & 63)) & 1 == 0:
                    break
                h = ((key * mult) >> shift) & hmask
                while table[2 * h] != key and table[2 * h] != -1:
                    h = (h + 1) & hmask
                if table[2 * h] == -1:
                    break
                n = table[2 * h + 1]
