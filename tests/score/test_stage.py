"""Scoring: agreement with an independent one-sentence-at-a-time implementation (both
conventions, GPT-2 and GPT-NeoX, the real tokenizers), batch-size independence, hidden states
and attention from the same pass, the CLI's files, resume and bad input."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from grokscope import cli  # noqa: E402
from grokscope.core.store import Study, read_parquet_metadata  # noqa: E402
from grokscope.core.tokenizer import load_tokenizer  # noqa: E402
from grokscope.score.encoding import pack_rows  # noqa: E402
from grokscope.score.stage import ScoreOptions, encode_pairs, score_pairs  # noqa: E402

PARADIGMS = ("determiner_noun_agreement_1", "anaphor_gender_agreement", "regular_plural_subject_verb_agreement_1")
PAIRS_PER_PARADIGM = 12


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the test machine is shared: one thread avoids OpenMP spin-waits on tiny matmuls
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# fixtures: real tokenizers, random-init models saved as HF dirs, real BLiMP pairs with spans
# ---------------------------------------------------------------------------------------------
def _gpt2_model(n_positions: int = 128, vocab: int = 50257):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=n_positions, vocab_size=vocab)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _neox_model():
    torch.manual_seed(1)
    cfg = transformers.GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=256, vocab_size=50304, max_position_embeddings=128)
    return transformers.GPTNeoXForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def gpt2_tok(gpt2_tokenizer_dir):
    return load_tokenizer(gpt2_tokenizer_dir)


@pytest.fixture(scope="module")
def pythia_tok(pythia_tokenizer_file):
    return load_tokenizer(pythia_tokenizer_file)


@pytest.fixture(scope="module", params=["gpt2", "neox"])
def model_and_tok(request, gpt2_tok, pythia_tok):
    if request.param == "gpt2":
        return _gpt2_model(), gpt2_tok
    return _neox_model(), pythia_tok


def _word_spans(text: str) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for w in text.rstrip(".?!").split(" "):
        spans.append((pos, pos + len(w)))
        pos += len(w) + 1
    return spans


@pytest.fixture(scope="module")
def pairs(blimp_dir) -> pd.DataFrame:
    """Real BLiMP pairs whose good and bad differ in one word; critical = that word, context =
    the word before it (determiner / subject), or the first word (the antecedent) for anaphors."""
    rows = []
    for paradigm in PARADIGMS:
        with open(blimp_dir / f"{paradigm}.jsonl", encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                g, b = d["sentence_good"], d["sentence_bad"]
                gs, bs = _word_spans(g), _word_spans(b)
                if len(gs) != len(bs):
                    continue
                diff = [k for k in range(len(gs)) if g[slice(*gs[k])] != b[slice(*bs[k])]]
                if len(diff) != 1 or diff[0] == 0:
                    continue
                k = diff[0]
                c = 0 if paradigm.startswith("anaphor") else k - 1
                rows.append({
                    "uid": d["UID"], "pair_id": int(d["pairID"]), "good": g, "bad": b, "supported": True,
                    "critical_start": gs[k][0], "critical_end": gs[k][1],
                    "bad_critical_start": bs[k][0], "bad_critical_end": bs[k][1],
                    "context_start": gs[c][0], "context_end": gs[c][1],
                    "bad_context_start": bs[c][0], "bad_context_end": bs[c][1],
                    "phrase_start": gs[c][0], "phrase_end": gs[k][1],
                    "bad_phrase_start": bs[c][0], "bad_phrase_end": bs[k][1],
                })
                if sum(r["uid"] == d["UID"] for r in rows) >= PAIRS_PER_PARADIGM:
                    break
    df = pd.DataFrame(rows)
    assert len(df) >= 30
    return df


# ---------------------------------------------------------------------------------------------
# the independent reference: one sentence at a time, plain forward pass
# ---------------------------------------------------------------------------------------------
def _reference_ids(tok, text: str, convention: str) -> tuple[list[int], int]:
    """Token ids as each tool builds them, and the character shift of the scored text."""
    if convention == "lm_eval":  # context "" -> prefix token; continuation " " + sentence
        cont = tok(" " + text, add_special_tokens=False)["input_ids"]
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        return [prefix] + cont, 1
    if convention == "minicons":  # tokenizer(bos_token + sentence)
        return tok(tok.bos_token + text, add_special_tokens=False)["input_ids"], 0
    return tok(text, add_special_tokens=False)["input_ids"], 0


def _n_tokens(tok, text: str, convention: str) -> int:
    """Number of ids (prefix included) covering ``text`` — a prefix of a sentence."""
    return len(_reference_ids(tok, text, convention)[0]) if text else (0 if convention == "none" else 1)


def _reference_token_logprobs(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()  # [T, vocab]
    logp = torch.log_softmax(logits, dim=-1)
    return np.array([logp[j - 1, ids[j]].item() for j in range(1, len(ids))])  # token j given < j


def _word_token_range(tok, text: str, start: int, end: int, convention: str) -> tuple[int, int]:
    """[first, last] token index (prefix counted) of the word at text[start:end]."""
    first = _n_tokens(tok, text[:start].rstrip(), convention)  # tokens before the word
    last = _n_tokens(tok, text[:end], convention) - 1
    return first, last


# ---------------------------------------------------------------------------------------------
# agreement
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("convention", ["lm_eval", "minicons", "none"])
def test_logprobs_and_accuracy_match_reference(model_and_tok, pairs, convention):
    model, tok = model_and_tok
    res = score_pairs(model, tok, pairs, options=ScoreOptions(convention=convention, batch_size=16, progress=False))
    t = res.table
    assert list(t["uid"]) == list(pairs["uid"]) and list(t["pair_id"]) == list(pairs["pair_id"])
    ref = {}
    for side in ("good", "bad"):
        lps = [_reference_token_logprobs(model, _reference_ids(tok, s, convention)[0]) for s in pairs[side]]
        ref[side] = np.array([lp.sum() for lp in lps])
        np.testing.assert_allclose(t[f"{side}_logprob"], ref[side], atol=1e-4, rtol=0)
        assert list(t[f"{side}_ntokens"]) == [len(lp) for lp in lps]
    assert list(t["correct"]) == list(ref["good"] > ref["bad"])
    assert t["correct"].mean() == pytest.approx(np.mean(ref["good"] > ref["bad"]))


def test_fused_activation_keeps_the_reference_numbers(gpt2_tok, pairs):
    """``load_model`` swaps GPT-2's Python tanh-GELU for the fused kernel: scores must still
    match the plain forward pass of the unmodified model (and the swap must happen)."""
    import copy

    from grokscope.core.checkpoints import fuse_activations

    plain = _gpt2_model()
    fused = copy.deepcopy(plain)
    assert fuse_activations(fused) == plain.config.n_layer
    assert all(type(b.mlp.act).__name__ == "GELUTanh" for b in fused.transformer.h)
    assert fuse_activations(_neox_model()) == 0  # exact GELU already: nothing to swap
    t = score_pairs(fused, gpt2_tok, pairs, options=ScoreOptions(batch_size=16, progress=False)).table
    for side in ("good", "bad"):
        ref = [_reference_token_logprobs(plain, _reference_ids(gpt2_tok, s, "lm_eval")[0]).sum() for s in pairs[side]]
        np.testing.assert_allclose(t[f"{side}_logprob"], ref, atol=1e-4, rtol=0)


def test_load_model_hides_transformers_bar_only_when_asked(gpt2_tok, tmp_path, capfd):
    """``progress=False`` (``score --quiet``) hides transformers' "Loading weights" bar and puts
    the global setting back; the default leaves it shown."""
    from transformers.utils import logging as hf_logging

    from grokscope.core.checkpoints import Checkpoint, load_model

    path = _save_checkpoint(_gpt2_model(), gpt2_tok, tmp_path / "ckpt")
    ckpt = Checkpoint(str(path), None, 0, 0, "hf_dir")
    capfd.readouterr()
    load_model(ckpt, progress=False)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
    load_model(ckpt)
    assert "Loading weights" in capfd.readouterr().err


def test_load_model_resumes_paused_collection_before_the_weights(gpt2_tok, tmp_path):
    """Under the console script, collection is paused for ``score`` (grokscope.core.heap):
    ``load_model`` turns it back on once the architecture is imported and before the weights
    exist, so a model that is dropped later is collected even when it sits in a cycle."""
    import gc
    import weakref

    from grokscope.core import heap
    from grokscope.core.checkpoints import Checkpoint, load_model

    ckpt = Checkpoint(str(_save_checkpoint(_gpt2_model(), gpt2_tok, tmp_path / "ckpt")), None, 0, 0, "hf_dir")
    frozen = gc.get_freeze_count()
    heap.pause()
    try:
        assert not gc.isenabled()
        model = load_model(ckpt, progress=False)
        assert gc.isenabled() and not heap.is_paused()
        assert gc.get_freeze_count() > frozen  # what existed before loading is frozen
        model.loop = [model]  # a reference cycle: only the collector can free it
        ref = weakref.ref(model)
        del model
        gc.collect()
        assert ref() is None
    finally:
        heap.resume()
        gc.unfreeze()


def test_bfloat16_scores_track_float32(model_and_tok, pairs):
    """bf16, the default on GPU, run here on CPU: the additive mask in bf16's range, the module
    path for a bf16 output layer and float32 log-softmax must give log-probs within bf16's
    precision of float32's, and (nearly) the same judgements."""
    import copy

    model, tok = model_and_tok
    opts = ScoreOptions(batch_size=16, progress=False)
    ref = score_pairs(model, tok, pairs, options=opts).table
    t = score_pairs(copy.deepcopy(model).to(torch.bfloat16), tok, pairs, options=opts).table
    for col in ("good_logprob", "bad_logprob", "good_critical_logprob", "bad_critical_logprob"):
        assert np.isfinite(t[col]).sum() == np.isfinite(ref[col]).sum()
        np.testing.assert_allclose(t[col], ref[col], rtol=5e-4, atol=0.02)  # seen: 0.006 at |lp| ~70
    assert (t["correct"] == ref["correct"]).mean() >= 0.95


def test_vocab_blocked_output_layer_equals_the_module_path(model_and_tok, pairs, monkeypatch):
    """On CPU the output layer runs in [rows, vocab-block] tiles with an online log-sum-exp; a
    hook on the output projection switches back to calling the module on full-vocabulary
    chunks. Both paths, and small tiles (several row chunks, a ragged last vocabulary block),
    must give the same numbers."""
    from grokscope.score import pairs as pair_scoring

    model, tok = model_and_tok
    opts = ScoreOptions(batch_size=16, progress=False)
    blocked = score_pairs(model, tok, pairs, options=opts).table
    handle = model.get_output_embeddings().register_forward_hook(lambda mod, inp, out: None)
    try:
        module_path = score_pairs(model, tok, pairs, options=opts).table
        monkeypatch.setattr(pair_scoring, "_LOGIT_CHUNK_ROWS", 5)  # many chunks, a ragged last one
        small_chunks = score_pairs(model, tok, pairs, options=opts).table
    finally:
        handle.remove()
    monkeypatch.setattr(pair_scoring, "_BLOCK_ROWS", 7)
    monkeypatch.setattr(pair_scoring, "_VOCAB_BLOCK", 999)
    small_tiles = score_pairs(model, tok, pairs, options=opts).table
    for t in (module_path, small_chunks, small_tiles):
        for col in ("good_logprob", "bad_logprob", "good_critical_logprob", "bad_critical_logprob"):
            np.testing.assert_allclose(t[col], blocked[col], atol=1e-5, rtol=0, err_msg=col)


def test_eager_and_sdpa_attention_give_the_same_scores(model_and_tok, pairs, monkeypatch):
    """On CPU, short prefix-tree rows run eager attention (faster there) and wide ones sdpa;
    both give the same numbers, and the model is left with the attention it was loaded with."""
    from grokscope.score import pairs as pair_scoring

    model, tok = model_and_tok
    loaded_with = model.config._attn_implementation
    assert loaded_with == "sdpa"
    seen = []
    base = getattr(model, model.base_model_prefix)  # scoring calls the body, then its own output layer
    hook = base.register_forward_pre_hook(lambda mod, args: seen.append(mod.config._attn_implementation))
    try:
        opts = ScoreOptions(batch_size=16, progress=False)
        eager = score_pairs(model, tok, pairs, options=opts).table
        assert set(seen) == {"eager"} and model.config._attn_implementation == loaded_with
        seen.clear()
        monkeypatch.setattr(pair_scoring, "_EAGER_CPU_MAX_WIDTH", 0)
        sdpa = score_pairs(model, tok, pairs, options=opts).table
        assert set(seen) == {loaded_with} and model.config._attn_implementation == loaded_with
    finally:
        hook.remove()
    for col in ("good_logprob", "bad_logprob", "good_critical_logprob", "bad_critical_logprob"):
        np.testing.assert_allclose(sdpa[col], eager[col], atol=1e-5, rtol=0, err_msg=col)
    assert list(sdpa["correct"]) == list(eager["correct"])


def test_lm_eval_convention_changes_first_word_tokens(gpt2_tok, pairs):
    """lm-eval scores ' Raymond', minicons 'Raymond' (different GPT-2 tokens)."""
    enc_lm = encode_pairs(gpt2_tok, pairs.head(1), "lm_eval")[0][0]
    enc_mc = encode_pairs(gpt2_tok, pairs.head(1), "minicons")[0][0]
    first = pairs["good"].iat[0].split(" ")[0]
    assert enc_lm.ids[0] == enc_mc.ids[0] == 50256
    assert enc_lm.ids[1:] == gpt2_tok(" " + pairs["good"].iat[0], add_special_tokens=False)["input_ids"]
    assert enc_mc.ids[1] == gpt2_tok(first, add_special_tokens=False)["input_ids"][0]
    assert enc_lm.ids[1] != enc_mc.ids[1]


@pytest.mark.parametrize("convention", ["lm_eval", "none"])
def test_critical_region_and_mean_reduction(gpt2_tok, pairs, convention):
    model = _gpt2_model()
    sentence = score_pairs(model, gpt2_tok, pairs, options=ScoreOptions(convention=convention, progress=False)).table
    crit_mean = score_pairs(model, gpt2_tok, pairs, options=ScoreOptions(
        convention=convention, region="critical", reduction="mean", progress=False)).table
    mean = score_pairs(model, gpt2_tok, pairs, options=ScoreOptions(convention=convention, reduction="mean", progress=False)).table
    for i, row in pairs.iterrows():
        for side, pre in (("good", ""), ("bad", "bad_")):
            text = row[side]
            ids, _ = _reference_ids(gpt2_tok, text, convention)
            lp = _reference_token_logprobs(model, ids)
            first, _ = _word_token_range(gpt2_tok, text, row[f"{pre}phrase_start"], row[f"{pre}phrase_end"], convention)
            _, last = _word_token_range(gpt2_tok, text, row[f"{pre}critical_start"], row[f"{pre}critical_end"], convention)
            phrase = lp[max(first, 1) - 1 : last]  # scored tokens first..last
            assert np.allclose(sentence.at[i, f"{side}_phrase_token_logprobs"], phrase, atol=1e-4)
            assert sentence.at[i, f"{side}_critical_logprob"] == pytest.approx(phrase.sum(), abs=1e-4)
            assert crit_mean.at[i, f"{side}_logprob"] == pytest.approx(phrase.mean(), abs=1e-4)
            assert crit_mean.at[i, f"{side}_ntokens"] == len(phrase)
            assert mean.at[i, f"{side}_logprob"] == pytest.approx(lp.mean(), abs=1e-5)
    assert list(crit_mean["correct"]) == list(crit_mean["good_logprob"] > crit_mean["bad_logprob"])


def test_no_phrases_gives_nan_critical_columns(gpt2_tok, pairs):
    plain = pairs[["uid", "pair_id", "good", "bad"]]
    t = score_pairs(_gpt2_model(), gpt2_tok, plain, options=ScoreOptions(progress=False, capture_hidden=True)).table
    assert t["good_critical_logprob"].isna().all() and (t["hidden_row"] == -1).all()
    assert all(len(x) == 0 for x in t["good_phrase_token_logprobs"])


# ---------------------------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------------------------
def test_batch_size_and_packing_do_not_change_scores(model_and_tok, pairs):
    model, tok = model_and_tok
    tables = {}
    for bs in (1, 7, 64):
        for pack in (True, False):
            opts = ScoreOptions(batch_size=bs, pack_prefix=pack, progress=False)
            tables[bs, pack] = score_pairs(model, tok, pairs, options=opts).table
    base = tables[1, False]
    for key, t in tables.items():
        for col in ("good_logprob", "bad_logprob", "good_critical_logprob", "bad_critical_logprob"):
            np.testing.assert_allclose(t[col], base[col], atol=1e-5, rtol=0, err_msg=f"{key} {col}")
        assert list(t["correct"]) == list(base["correct"])


def test_prefix_tree_rows_are_exact_tries(gpt2_tok, pairs):
    sentences = [e for pair in encode_pairs(gpt2_tok, pairs, "lm_eval") for e in pair]
    rows = pack_rows(sentences, 16)
    assert sorted(s for r in rows for s in r.sentences) == list(range(len(sentences)))
    for row in rows:
        fed = {s: sentences[s].ids[: sentences[s].need + 1] for s in row.sentences}
        # one node per distinct prefix of the row's sentences (brute force)
        assert len(row.ids) == len({tuple(f[: j + 1]) for f in fed.values() for j in range(len(f))})
        for s, path in zip(row.sentences, row.paths):
            assert list(row.ids[path]) == fed[s]
            assert list(row.positions[path]) == list(range(len(fed[s])))
            for j, node in enumerate(path):  # a node sees exactly itself and its ancestors
                assert set(np.nonzero(row.visible[node])[0]) == set(path[: j + 1].tolist())
    shared = sum(len(r.ids) for r in rows)
    unshared = sum(len(r.ids) for r in pack_rows(sentences, 16, share_prefix=False))
    assert unshared == sum(s.need + 1 for s in sentences) and shared < 0.9 * unshared


# ---------------------------------------------------------------------------------------------
# hidden states and attention, from the same pass
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hidden_at", ["later", "critical"])
def test_hidden_and_attention_match_plain_forward(model_and_tok, pairs, tmp_path, hidden_at):
    model, tok = model_and_tok
    pairs = pairs.copy()
    swap = pairs.index % 3 == 0  # critical word before its context word (as in BLiMP's transitive, ...)
    for a, b in (("critical", "context"), ("bad_critical", "bad_context")):
        for end in ("start", "end"):
            x, y = pairs.loc[swap, f"{a}_{end}"].copy(), pairs.loc[swap, f"{b}_{end}"].copy()
            pairs.loc[swap, f"{a}_{end}"], pairs.loc[swap, f"{b}_{end}"] = y, x
    opts = ScoreOptions(capture_hidden=True, capture_attention=True, hidden_pairs=len(pairs), batch_size=8,
                        progress=False, hidden_at=hidden_at)
    res = score_pairs(model, tok, pairs, options=opts)
    n_layer, n_head, d = model.config.num_hidden_layers, model.config.num_attention_heads, model.config.hidden_size
    assert res.hidden.shape == (len(pairs), 2, n_layer + 1, d) and res.hidden.dtype == np.float16
    assert res.attention.shape == (len(pairs), 2, n_layer, n_head) and res.attention.dtype == np.float16
    rows = res.table["hidden_row"].to_numpy()
    assert sorted(rows[rows >= 0]) == list(range(len(pairs)))
    # the same seeded subsample every time
    again = score_pairs(model, tok, pairs, options=opts)
    assert list(again.table["hidden_row"]) == list(rows)
    # the log-probs are unaffected by capturing (eager attention vs sdpa)
    plain = score_pairs(model, tok, pairs, options=ScoreOptions(batch_size=8, progress=False)).table
    np.testing.assert_allclose(res.table["good_logprob"], plain["good_logprob"], atol=1e-5)

    eager = type(model)(model.config).eval()
    eager.load_state_dict(model.state_dict())
    eager.set_attn_implementation("eager")
    for i, row in pairs.iterrows():
        for s, (side, pre) in enumerate((("good", ""), ("bad", "bad_"))):
            ids, _ = _reference_ids(tok, row[side], "lm_eval")
            with torch.no_grad():
                out = eager(torch.tensor([ids]), output_hidden_states=True, output_attentions=True)
            c_first, c_last = _word_token_range(tok, row[side], row[f"{pre}critical_start"], row[f"{pre}critical_end"], "lm_eval")
            x_first, x_last = _word_token_range(tok, row[side], row[f"{pre}context_start"], row[f"{pre}context_end"], "lm_eval")
            if rows[i] >= 0:
                at = max(c_last, x_last) if hidden_at == "later" else c_last
                ref_h = np.stack([h[0, at].numpy() for h in out.hidden_states])  # [n_layer+1, d]
                np.testing.assert_allclose(res.hidden[rows[i], s].astype(np.float32), ref_h, rtol=2e-3, atol=2e-3)
            if x_last < c_first:  # context first: from the critical token to the context word
                q, keys = c_last, range(x_first, x_last + 1)
            else:
                q, keys = x_last, range(c_first, c_last + 1)
            ref_a = np.stack([a[0, :, q, list(keys)].sum(-1).numpy() for a in out.attentions])  # [n_layer, n_head]
            np.testing.assert_allclose(res.attention[i, s].astype(np.float32), ref_a, atol=2e-3)
            # distance-matched baseline, brute force: the same distances from every other query position
            dists = [q - k for k in keys]
            lowest = 0 if min(keys) == 0 else 1
            others = [qq for qq in range(len(ids) - 1) if qq != q and min(qq - d for d in dists) >= lowest]
            if others:
                ref_b = np.mean([np.stack([sum(a[0, :, qq, qq - d] for d in dists).numpy() for a in out.attentions])
                                 for qq in others], axis=0)
                np.testing.assert_allclose(res.attention_baseline[i, s].astype(np.float32), ref_b, atol=2e-3)
            else:
                assert np.isnan(res.attention_baseline[i, s]).all()


def test_forward_hooks_on_the_model_stay_in_effect(gpt2_tok, pairs):
    """Head ablation re-scores in-process with hooks; the scores must see them."""
    model = _gpt2_model()
    base = score_pairs(model, gpt2_tok, pairs, options=ScoreOptions(progress=False)).table

    def zero_head0(module, args):
        (x,) = args  # [batch, T, d_model] input of c_proj = concatenated heads
        x = x.clone()
        x[..., :16] = 0
        return (x,)

    handle = model.transformer.h[1].attn.c_proj.register_forward_pre_hook(zero_head0)
    try:
        ablated = score_pairs(model, gpt2_tok, pairs, options=ScoreOptions(progress=False)).table
        ref = [_reference_token_logprobs(model, _reference_ids(gpt2_tok, s, "lm_eval")[0]).sum() for s in pairs["good"]]
    finally:
        handle.remove()
    np.testing.assert_allclose(ablated["good_logprob"], ref, atol=1e-4)
    assert np.abs(ablated["good_logprob"] - base["good_logprob"]).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# CLI: files, resume, bad input
# ---------------------------------------------------------------------------------------------
def _save_checkpoint(model, tok, path: Path, step: int | None = None) -> Path:
    model.save_pretrained(path)
    tok.save_pretrained(path)
    if step is not None:
        (path / "grokscope_checkpoint.json").write_text(json.dumps(
            {"step": step, "tokens_seen": step * 4 * 129, "rows_seen": step * 4, "loss": 1.0, "seq_len": 128,
             "rows_per_step": 4, "tokens_path": "tokens"}))
    return path


@pytest.fixture
def scored_study(tmp_path, gpt2_tok, pairs):
    run = tmp_path / "study" / "run" / "checkpoints"
    for step in (0, 4):
        _save_checkpoint(_gpt2_model(), gpt2_tok, run / f"step_{step:08d}", step)
    pairs.to_parquet(tmp_path / "phrases.parquet")
    return tmp_path


def test_cli_writes_contract_files_and_resumes(scored_study, pairs, capsys):
    study_dir = scored_study / "study"
    argv = ["score", "--checkpoints", str(study_dir), "--phrases", str(scored_study / "phrases.parquet"),
            "--out", str(study_dir), "--batch-size", "16", "--hidden-pairs", "5", "--quiet", "--threads", "1"]
    assert cli.main(argv) == 0
    study = Study(study_dir)
    assert study.scored_steps() == [0, 4]
    t = pd.read_parquet(study.score_path(4))
    assert list(t.columns) == ["uid", "pair_id", "good_logprob", "bad_logprob", "good_ntokens", "bad_ntokens",
                               "correct", "good_critical_logprob", "bad_critical_logprob",
                               "good_phrase_token_logprobs", "bad_phrase_token_logprobs", "hidden_row"]
    assert t["hidden_row"].dtype == np.int32 and t["good_logprob"].dtype == np.float64
    meta = read_parquet_metadata(study.score_path(4))
    assert meta["step"] == 4 and meta["tokens_seen"] == 4 * 4 * 129 and meta["convention"] == "lm_eval"
    assert (meta["n_layer"], meta["n_head"], meta["d_model"]) == (2, 4, 64)
    hidden = np.load(study.hidden_path(4), mmap_mode="r")
    assert hidden.shape == (5, 2, 3, 64) and hidden.dtype == np.float16
    att = np.load(study.attention_path(4))
    assert att.shape == (len(pairs), 2, 2, 4)
    # the same numbers as the Python API
    model = transformers.AutoModelForCausalLM.from_pretrained(study_dir / "run/checkpoints/step_00000004")
    api = score_pairs(model, load_tokenizer(study_dir / "run/checkpoints/step_00000004"), pairs,
                      options=ScoreOptions(progress=False)).table
    np.testing.assert_allclose(t["good_logprob"], api["good_logprob"], atol=1e-5)
    out = capsys.readouterr().out
    assert "scored" in out and "step" in out
    # resume: a second run skips both (files untouched)
    mtimes = [os.path.getmtime(study.score_path(s)) for s in (0, 4)]
    assert cli.main(argv) == 0
    assert [os.path.getmtime(study.score_path(s)) for s in (0, 4)] == mtimes
    assert "skipped (done)" in capsys.readouterr().out
    # different settings on an existing study: refused, not silently mixed
    assert cli.main(argv + ["--convention", "minicons"]) == 2
    assert "different settings" in capsys.readouterr().err


def test_cli_bad_checkpoints_exit_2_and_keep_the_others(scored_study, gpt2_tok, pairs, capsys):
    study_dir = scored_study / "study"
    ckpts = study_dir / "run" / "checkpoints"
    # a checkpoint dir with no weights (killed while saving)
    broken = ckpts / "step_00000008"
    broken.mkdir()
    (broken / "config.json").write_text(_gpt2_model().config.to_json_string())
    (broken / "grokscope_checkpoint.json").write_text(json.dumps({"step": 8, "tokens_seen": 8}))
    # a model whose embedding is smaller than the tokenizer's vocabulary
    small = _save_checkpoint(_gpt2_model(vocab=1000), gpt2_tok, ckpts / "step_00000016", 16)
    # a model whose context is shorter than the pairs
    short = _save_checkpoint(_gpt2_model(n_positions=4), gpt2_tok, ckpts / "step_00000032", 32)
    argv = ["score", "--checkpoints", str(study_dir), str(scored_study / "missing_dir"),
            "--phrases", str(scored_study / "phrases.parquet"), "--out", str(study_dir), "--quiet",
            "--no-hidden", "--no-attention", "--threads", "1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "missing_dir" in err and "does not exist" in err
    assert "step_00000008" in err and "no model weights" in err
    assert "50257 ids" in err and "1000 rows" in err and str(small) in err
    assert "longer than the model's context of 4" in err and str(short) in err
    assert Study(study_dir).scored_steps() == [0, 4]  # the good checkpoints were scored


def test_cli_invalid_pair_is_an_error_or_reported_and_skipped(tmp_path, gpt2_tok, pairs, capsys):
    """An identical good/bad pair (BLiMP has 7): exit 2 naming file and line; with
    --skip-invalid it is reported on stderr and the other pairs are scored."""
    plain = _save_checkpoint(_gpt2_model(), gpt2_tok, tmp_path / "my_model")
    bench = tmp_path / "pairs.jsonl"
    rows = [{"sentence_good": r.good, "sentence_bad": r.bad, "UID": r.uid, "pairID": r.pair_id}
            for r in pairs.head(4).itertuples()]
    rows[2]["sentence_bad"] = rows[2]["sentence_good"]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = ["score", "--checkpoints", str(plain), "--benchmark", str(bench), "--out", str(tmp_path / "s"),
            "--step", "1", "--tokens-seen", "10", "--quiet", "--no-hidden", "--no-attention", "--threads", "1"]
    assert cli.main(base) == 2
    err = capsys.readouterr().err
    assert f"{bench}:3" in err and "identical" in err and "--skip-invalid" in err
    assert cli.main(base + ["--skip-invalid"]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped invalid pair") == 1 and f"{bench}:3" in err
    t = pd.read_parquet(Study(tmp_path / "s").score_path(1))
    assert list(t["pair_id"]) == [rows[i]["pairID"] for i in (0, 1, 3)]


def test_cli_plain_hf_dir_needs_step(tmp_path, gpt2_tok, pairs, capsys):
    plain = _save_checkpoint(_gpt2_model(), gpt2_tok, tmp_path / "my_model")
    bench = tmp_path / "pairs.jsonl"
    with open(bench, "w") as f:
        for r in pairs.head(5).itertuples():
            f.write(json.dumps({"sentence_good": r.good, "sentence_bad": r.bad, "UID": r.uid, "pairID": r.pair_id}) + "\n")
    base = ["score", "--checkpoints", str(plain), "--benchmark", str(bench), "--out", str(tmp_path / "s"),
            "--quiet", "--threads", "1"]
    assert cli.main(base) == 2
    assert "training step unknown" in capsys.readouterr().err
    assert not (tmp_path / "s" / "scores").exists() or not list((tmp_path / "s" / "scores").iterdir())
    assert cli.main(base + ["--step", "100", "--tokens-seen", "51200"]) == 0
    meta = read_parquet_metadata(Study(tmp_path / "s").score_path(100))
    assert meta["tokens_seen"] == 51200 and meta["checkpoint"] == str(plain.resolve())
    t = pd.read_parquet(Study(tmp_path / "s").score_path(100))
    assert len(t) == 5 and t["good_critical_logprob"].isna().all()


def test_run_stage_scores_the_study_run_and_needs_phrases(scored_study, pairs):
    from grokscope.core.config import config_from_dict
    from grokscope.core.errors import MissingStageError
    from grokscope.score.stage import run_stage

    study = Study(scored_study / "study")
    cfg = config_from_dict({"score": {"capture_attention": False, "hidden_pairs": 3, "batch_size": 8}})
    with pytest.raises(MissingStageError, match="grokscope phrases"):
        run_stage(cfg, study)
    pairs.to_parquet(study.phrases_path)
    run_stage(cfg, study)
    assert study.scored_steps() == [0, 4]
    assert np.load(study.hidden_path(0)).shape == (3, 2, 3, 64)
    assert not study.attention_path(0).exists()


def test_prefetch_gives_the_files_of_a_sequential_run(scored_study, gpt2_tok, pairs):
    """Loading one checkpoint ahead ([score] prefetch = 1, the default) writes exactly the tables
    and arrays of loading each on its turn (prefetch = 0); a corrupt checkpoint in the middle fails
    alone."""
    ckpts = scored_study / "study" / "run" / "checkpoints"
    for step in (8, 12):
        _save_checkpoint(_gpt2_model(), gpt2_tok, ckpts / f"step_{step:08d}", step)
    (ckpts / "step_00000008" / "model.safetensors").write_bytes(b"not a safetensors file")
    outs = {}
    for prefetch in (0, 1):
        out = scored_study / f"out{prefetch}"
        argv = ["score", "--checkpoints", str(scored_study / "study"), "--phrases", str(scored_study / "phrases.parquet"),
                "--out", str(out), "--batch-size", "16", "--hidden-pairs", "5", "--quiet", "--threads", "1",
                "--set", f"score.prefetch={prefetch}"]
        assert cli.main(argv) == 2  # step 8 is corrupt
        study = Study(out)
        assert study.scored_steps() == [0, 4, 12]
        outs[prefetch] = study
    for step in (0, 4, 12):
        a, b = outs[0], outs[1]
        pd.testing.assert_frame_equal(pd.read_parquet(a.score_path(step)), pd.read_parquet(b.score_path(step)))
        np.testing.assert_array_equal(np.load(a.hidden_path(step)), np.load(b.hidden_path(step)))
        np.testing.assert_array_equal(np.load(a.attention_path(step)), np.load(b.attention_path(step)))
