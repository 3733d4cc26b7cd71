"""Head statistics against brute force / scipy, and head ablation against an independent
computation (zeroing the output-projection weights of the ablated heads)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grokscope.analyse import heads as hd


def test_gini_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = rng.exponential(size=rng.integers(2, 40))
        brute = np.abs(v[:, None] - v[None, :]).sum() / (2 * v.size**2 * v.mean())
        assert hd.gini(v) == pytest.approx(brute, rel=1e-12)
    assert hd.gini(np.ones(10)) == pytest.approx(0.0)
    assert hd.gini(np.array([0, 0, 0, 1.0])) == pytest.approx(0.75)  # (m-1)/m for one head


def test_entropy_and_topk_share():
    from scipy.stats import entropy

    rng = np.random.default_rng(1)
    v = rng.random((4, 6))
    assert hd.entropy_bits(v) == pytest.approx(entropy(v.ravel(), base=2))
    assert hd.entropy_bits(np.ones(8)) == pytest.approx(3.0)
    assert hd.topk_share(np.array([[1.0, 2.0], [3.0, 4.0]]), 2) == pytest.approx(0.7)
    c = hd.concentration(np.array([[0.1, 0.9], [0.3, 0.2]]), 2)
    assert c.top_heads == "L0H1,L1H0"
    assert hd.parse_heads(c.top_heads) == [(0, 1), (1, 0)]


def test_head_attention_is_nan_aware_mean_of_good_sentences():
    rng = np.random.default_rng(2)
    att = rng.random((50, 2, 3, 4)).astype(np.float16)
    att[::5, 0] = np.nan  # no context word
    rows = np.arange(0, 50, 2)
    with np.errstate(all="ignore"):
        expected = np.nanmean(att[rows, 0].astype(np.float64), axis=0)
    np.testing.assert_allclose(hd.head_attention(att, rows), expected, rtol=1e-12)
    df = hd.heads_frame(7, expected)
    assert list(df.columns) == ["step", "layer", "head", "attention"]
    assert df.loc[(df["layer"] == 2) & (df["head"] == 3), "attention"].iloc[0] == expected[2, 3]


def test_random_head_sets_exclude_top_and_are_distinct():
    rng = np.random.default_rng(3)
    sets = hd.random_head_sets(3, 4, 2, [(1, 1), (2, 0)], 50, rng)
    assert len(sets) == 50
    for s in sets:
        assert len(set(s)) == 2 and not {(1, 1), (2, 0)} & set(s)


# ---- ablation on real transformers models -------------------------------------------------
def _gpt2(seed=0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=61, n_positions=32, n_embd=32, n_layer=3, n_head=4)
    return GPT2LMHeadModel(cfg).eval()


def _neox(seed=0):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32)
    return GPTNeoXForCausalLM(cfg).eval()


def _zero_head_weights(model, heads):
    """Independent ablation: zero the output projection's weights reading the heads' slices."""
    import torch

    modules, n_head, head_dim = hd.attention_output_projections(model)
    with torch.no_grad():
        for layer, head in heads:
            m = modules[layer]
            sl = slice(head * head_dim, (head + 1) * head_dim)
            if type(m).__name__ == "Conv1D":  # GPT-2: weight [in, out]
                m.weight[sl, :] = 0
            else:  # nn.Linear: weight [out, in]
                m.weight[:, sl] = 0


@pytest.mark.parametrize("make", [_gpt2, _neox], ids=["gpt2", "gpt_neox"])
def test_ablation_hook_equals_zeroed_weights(make):
    import torch

    model = make()
    ids = torch.randint(0, 61, (2, 10), generator=torch.Generator().manual_seed(0))
    heads = [(0, 1), (1, 3), (1, 0)]
    with torch.no_grad():
        base = model(ids).logits
        with hd.ablate_heads(model, heads):
            hooked = model(ids).logits
        after = model(ids).logits  # hooks removed
        reference = make()
        _zero_head_weights(reference, heads)
        zeroed = reference(ids).logits
    assert not torch.allclose(hooked, base)
    torch.testing.assert_close(hooked, zeroed, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after, base)


def test_ablation_table_rows_and_deltas():
    import torch

    model = _gpt2()
    ids = torch.randint(0, 61, (8, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = model(ids).logits.argmax(-1)

    def accuracy(m) -> float:  # agreement with the unablated model's predictions
        with torch.no_grad():
            return float((m(ids).logits.argmax(-1) == target).float().mean())

    table = hd.ablation_table(model, accuracy, step=100, top=[(0, 0), (2, 1)], repeats=5,
                              rng=np.random.default_rng(0))
    assert list(table.columns) == ["step", "condition", "repeat", "heads", "accuracy", "delta_accuracy"]
    assert list(table["condition"]) == ["top"] + ["random"] * 5
    assert table.loc[0, "heads"] == "L0H0,L2H1"
    np.testing.assert_allclose(table["delta_accuracy"], table["accuracy"] - 1.0)
    assert (table["accuracy"] <= 1.0).all() and (table["delta_accuracy"] < 0).any()
    p = hd.ablation_p_value(table)
    assert 1 / 6 <= p <= 1.0


def test_ablation_p_value_hand_worked():
    t = pd.DataFrame({"condition": ["top", "random", "random", "random"],
                      "delta_accuracy": [-0.2, -0.01, -0.3, 0.0]})
    assert hd.ablation_p_value(t) == pytest.approx((1 + 1) / 4)


def test_unsupported_model_is_a_clear_error():
    import torch

    from grokscope.core.errors import GrokscopeError

    with pytest.raises(GrokscopeError, match="no attention output projection"):
        hd.attention_output_projections(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("convention", ["lm_eval", "minicons", "none"])
def test_ablation_scorer_uses_the_studys_scoring(convention, gpt2_tokenizer_dir):
    """The ablation accuracy is computed as the study's scores were (convention from their metadata)."""
    import pandas as pd
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from grokscope.core.tokenizer import load_tokenizer
    from grokscope.score.stage import ScoreOptions, score_pairs

    tok = load_tokenizer(gpt2_tokenizer_dir)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=32, n_embd=16, n_layer=1, n_head=2)).eval()
    nouns = ["sketch", "car", "dog", "book", "house", "tree", "cup", "bird", "chair", "lamp"]
    pairs = pd.DataFrame({
        "uid": "det", "pair_id": range(len(nouns)),
        "good": [f"Raymond sold this {n}." for n in nouns],
        "bad": [f"Raymond sold this {n}s." for n in nouns],
    })
    got = hd.score_accuracy_fn(tok, pairs, None, {"convention": convention, "step": 3})(model)
    ref = score_pairs(model, tok, pairs, options=ScoreOptions(convention=convention, progress=False))
    assert got == pytest.approx(float(ref.table["correct"].mean()))
