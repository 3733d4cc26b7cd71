"""Ground truth for the head analysis: a hand-wired GPT-2 in which chosen heads *causally* carry a
grammatical contrast and others only attend.

The model (1 layer, 4 heads, MLP switched off, no position embeddings) reads two features of
every noun -- number and gender -- and two benchmark phenomena test them:

* ``number``: "the NOUN ADVERB VERB" -- the verb must agree in number with the noun
  ("the king often sings" / "the king often sing");
* ``gender``: "the NOUN VERB REFLEXIVE" -- the reflexive must agree in gender
  ("the king praised himself" / "the king praised herself").

Heads 0, 1 and 2 attend from every position to the nouns before it (their keys read a
noun indicator, their queries are a constant bias), so all three put ~all their attention from
the critical word on the context word. Head 0 writes the noun's number into the direction the
verbs' unembeddings read (**causal for number**); head 2 writes its gender into the direction the
reflexives read (**causal for gender**); head 1 reads the number too but its output projection is
zero (**attends, does not matter**). Head 3 attends uniformly and writes nothing.

Without head 0 (or 2) the good and bad continuation have equal logits: mean-ablating it removes
that phenomenon's margin and leaves the other's sign intact. :func:`planted_head_truth` names the
planted heads so tests (and a user checking the analysis) compare what is found with them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

D_MODEL, N_HEAD = 16, 4
HEAD_DIM = D_MODEL // N_HEAD
_NOUN, _NUMBER, _GENDER = 0, 1, 2  # residual dims of the token features
_READ_NUMBER, _READ_GENDER = (4, 8), (5, 9)  # (+, -) readout dims of the critical words
_MASC = ["actor", "baron", "boy", "duke", "king", "lad", "monk", "prince", "uncle", "waiter", "host", "god"]
_FEM = ["actress", "baroness", "girl", "duchess", "queen", "lass", "nun", "princess", "aunt", "waitress",
        "hostess", "goddess"]
_ADVERBS = ["often", "never", "always", "rarely", "seldom", "sometimes"]
_VERBS = [("sings", "sing"), ("runs", "run"), ("waits", "wait"), ("smiles", "smile"), ("laughs", "laugh"),
          ("sleeps", "sleep")]
_PAST = ["praised", "saw", "hurt", "blamed", "helped", "washed"]


def planted_head_truth() -> dict[str, Any]:
    """What is planted: ``causal`` {phenomenon: [(layer, head)]}, ``attends_only`` [(layer, head)]."""
    return {"causal": {"number": [(0, 0)], "gender": [(0, 2)]}, "attends_only": [(0, 1)],
            "uniform": [(0, 3)]}


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith("s") else "s")


def _vocabulary() -> list[str]:
    nouns = [w for n in _MASC + _FEM for w in (n, _plural(n))]
    verbs = [v for pair in _VERBS for v in pair]
    return ["<|endoftext|>", "the", *nouns, *_ADVERBS, *verbs, *_PAST, "himself", "herself"]


def build_planted_head_model(out: str | Path, gain: float = 3.0, readout: float = 3.0, seed: int = 0) -> Path:
    """Write the model and a word-level tokenizer as a Hugging Face directory ``out``; returns it."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = _vocabulary()
    ids = {w: i for i, w in enumerate(vocab)}
    rng = np.random.default_rng(seed)
    emb = np.zeros((len(vocab), D_MODEL))
    emb[:, 10:] = rng.normal(0, 0.3, (len(vocab), D_MODEL - 10))  # token identity, never read by a head
    emb[:, _NOUN] = -1.0
    for gender, lemmas in ((1.0, _MASC), (-1.0, _FEM)):
        for lemma in lemmas:
            for number, word in ((1.0, lemma), (-1.0, _plural(lemma))):
                emb[ids[word], [_NOUN, _NUMBER, _GENDER]] = (1.0, number, gender)
    for sg, pl in _VERBS:  # both forms share their identity features: only the readout differs
        emb[ids[pl], 10:] = emb[ids[sg], 10:]
        emb[ids[sg], list(_READ_NUMBER)] = (readout, -readout)
        emb[ids[pl], list(_READ_NUMBER)] = (-readout, readout)
    emb[ids["herself"], 10:] = emb[ids["himself"], 10:]
    emb[ids["himself"], list(_READ_GENDER)] = (readout, -readout)
    emb[ids["herself"], list(_READ_GENDER)] = (-readout, readout)

    cfg = GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=D_MODEL, n_layer=1, n_head=N_HEAD,
                     n_inner=4 * D_MODEL, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.ln_f.weight.fill_(1.0)
        block = model.transformer.h[0]
        block.ln_1.weight.fill_(1.0)
        block.ln_2.weight.fill_(1.0)
        model.transformer.wte.weight.copy_(torch.tensor(emb, dtype=torch.float32))
        w = block.attn.c_attn.weight  # Conv1D [in, 3 * d]: q | k | v
        b = block.attn.c_attn.bias
        q0, k0, v0 = 0, D_MODEL, 2 * D_MODEL
        for head, reads in ((0, _NUMBER), (1, _NUMBER), (2, _GENDER)):  # attend to nouns
            col = head * HEAD_DIM
            b[q0 + col] = 20.0  # constant query ...
            w[_NOUN, k0 + col] = 1.0  # ... matching the noun indicator
            w[reads, v0 + col] = 1.0
        w[_NUMBER, v0 + 3 * HEAD_DIM] = 1.0  # head 3: uniform attention (zero query), output unused
        proj = block.attn.c_proj.weight  # Conv1D [n_head * head_dim, d]
        proj[0 * HEAD_DIM, _READ_NUMBER[0]] = gain
        proj[0 * HEAD_DIM, _READ_NUMBER[1]] = -gain
        proj[2 * HEAD_DIM, _READ_GENDER[0]] = gain
        proj[2 * HEAD_DIM, _READ_GENDER[1]] = -gain
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok = Tokenizer(models.WordLevel(dict(ids), unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")
    fast.save_pretrained(out)
    return out


def _span(sentence: str, word_index: int) -> tuple[int, int]:
    words = sentence.split(" ")
    start = sum(len(w) + 1 for w in words[:word_index])
    return start, start + len(words[word_index])


def planted_head_pairs(n_per_phenomenon: int = 200, seed: int = 0) -> pd.DataFrame:
    """Minimal pairs of both phenomena with the phrase columns the score stage reads (spans of the
    critical word -- the last word -- and of the context word, the noun): ``uid, pair_id,
    phenomenon, good, bad, critical_phrase``, the span columns, ``supported``."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_per_phenomenon):
        masc = bool(rng.integers(2))
        lemma = str(rng.choice(_MASC if masc else _FEM))
        plural = bool(rng.integers(2))
        noun = _plural(lemma) if plural else lemma
        adverb = str(rng.choice(_ADVERBS))
        sg, pl = _VERBS[int(rng.integers(len(_VERBS)))]
        good, bad = (pl, sg) if plural else (sg, pl)
        rows.append(("number_agreement", "number", i, f"the {noun} {adverb} {good}", f"the {noun} {adverb} {bad}",
                     f"{adverb} {good}", 3))
    for i in range(n_per_phenomenon):
        masc = bool(rng.integers(2))
        noun = str(rng.choice(_MASC if masc else _FEM))
        verb = str(rng.choice(_PAST))
        good, bad = ("himself", "herself") if masc else ("herself", "himself")
        rows.append(("reflexive_gender", "gender", i, f"the {noun} {verb} {good}", f"the {noun} {verb} {bad}",
                     f"{verb} {good}", 3))
    out = []
    for uid, phenomenon, pid, good, bad, phrase, crit in rows:
        cs, ce = _span(good, crit)
        bcs, bce = _span(bad, crit)
        xs, xe = _span(good, 1)
        out.append({"uid": uid, "pair_id": pid, "phenomenon": phenomenon, "good": good, "bad": bad,
                    "critical_phrase": phrase, "critical_word": good.split(" ")[crit],
                    "bad_critical_word": bad.split(" ")[crit], "context_word": good.split(" ")[1],
                    "supported": True, "phrase_start": _span(good, crit - 1)[0], "phrase_end": ce,
                    "bad_phrase_start": _span(bad, crit - 1)[0], "bad_phrase_end": bce,
                    "critical_start": cs, "critical_end": ce, "bad_critical_start": bcs, "bad_critical_end": bce,
                    "context_start": xs, "context_end": xe, "bad_context_start": xs, "bad_context_end": xe})
    return pd.DataFrame(out)
