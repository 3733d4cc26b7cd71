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


def _brute_force_matched_sets(n_layer, n_head, top):
    import itertools

    heads = [(a, b) for a in range(n_layer) for b in range(n_head)]
    per_layer = [sum(1 for t in top if t[0] == layer) for layer in range(n_layer)]
    out = set()
    for combo in itertools.combinations(heads, len(top)):
        if set(combo) & set(top):
            continue
        if [sum(1 for t in combo if t[0] == layer) for layer in range(n_layer)] == per_layer:
            out.add(tuple(sorted(combo)))
    return out


def test_random_head_sets_layer_matched_distinct_and_enumerated_when_few():
    top = [(1, 1), (2, 0)]
    brute = _brute_force_matched_sets(3, 4, top)
    assert hd.n_layer_matched_sets(3, 4, top) == len(brute) == 9  # C(3,1) * C(3,1)
    every = hd.random_head_sets(3, 4, top, 50, np.random.default_rng(3))  # 9 <= 50: all of them, once
    assert {tuple(x) for x in every} == brute and len(every) == 9
    top = [(0, 0), (0, 1), (2, 3)]
    brute = _brute_force_matched_sets(3, 8, top)
    assert hd.n_layer_matched_sets(3, 8, top) == len(brute) == 15 * 7
    sampled = hd.random_head_sets(3, 8, top, 40, np.random.default_rng(4))
    assert len(sampled) == 40 and len({tuple(x) for x in sampled}) == 40  # no set twice
    assert {tuple(x) for x in sampled} <= brute
    # 3 of a layer's 4 heads on top: no disjoint set exists; the other 3-head sets of that layer instead
    demo = hd.random_head_sets(2, 4, [(1, 0), (1, 1), (1, 2)], 20, np.random.default_rng(5))
    assert hd.n_layer_matched_sets(2, 4, [(1, 0), (1, 1), (1, 2)]) == len(demo) == 3  # C(4,3) - 1
    assert all(len(x) == 3 and all(h[0] == 1 for h in x) for x in demo)
    assert [(1, 0), (1, 1), (1, 2)] not in demo


def test_topk_floor_and_adjacency():
    assert hd.topk_floor(8, 3) == pytest.approx(3 / 8)
    assert hd.topk_share(np.ones((2, 4)), 3) == pytest.approx(hd.topk_floor(8, 3))
    ph = pd.DataFrame({
        "good": ["The dog runs.", "The dog that I saw runs.", "Who did she see?", "x"],
        "critical_start": [8, 19, 14, -1], "critical_end": [12, 23, 17, -1],
        "context_start": [4, 4, 0, -1], "context_end": [7, 7, 3, -1],
    })
    np.testing.assert_array_equal(hd.adjacent_pairs(ph), [True, False, False, False])
    ph.loc[0, ["critical_start", "critical_end", "context_start", "context_end"]] = [4, 7, 8, 12]  # critical first
    assert hd.adjacent_pairs(ph)[0]


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


def _fold_means_into_bias(model, heads, means):
    """Independent mean-ablation: zero the heads' weight slices and add W_slice^T mean_h to the bias."""
    import torch

    modules, n_head, head_dim = hd.attention_output_projections(model)
    with torch.no_grad():
        for layer, head in heads:
            m = modules[layer]
            sl = slice(head * head_dim, (head + 1) * head_dim)
            mu = means[layer][head].to(m.weight.dtype)
            if type(m).__name__ == "Conv1D":  # out = x @ W + b, W [in, out]
                m.bias += mu @ m.weight[sl, :]
                m.weight[sl, :] = 0
            else:  # out = x @ W^T + b, W [out, in]
                m.bias += m.weight[:, sl] @ mu
                m.weight[:, sl] = 0


@pytest.mark.parametrize("make", [_gpt2, _neox], ids=["gpt2", "gpt_neox"])
def test_mean_ablation_equals_bias_folded_forward(make):
    import torch

    model = make()
    ids = torch.randint(0, 61, (3, 10), generator=torch.Generator().manual_seed(2))
    modules, n_head, head_dim = hd.attention_output_projections(model)
    captured = []
    handle = modules[1].register_forward_pre_hook(lambda _m, a: captured.append(a[0].detach().clone()))
    with torch.no_grad(), hd.record_head_means(model) as means:
        model(ids)
    handle.remove()
    manual = captured[0].reshape(-1, n_head, head_dim).double().mean(0)  # [n_head, head_dim]
    torch.testing.assert_close(means[1], manual)
    heads = [(0, 2), (1, 1), (1, 3)]
    with torch.no_grad():
        base = model(ids).logits
        with hd.ablate_heads(model, heads, means):
            hooked = model(ids).logits
        with hd.ablate_heads(model, heads):
            zeroed = model(ids).logits
        reference = make()
        _fold_means_into_bias(reference, heads, means)
        folded = reference(ids).logits
    torch.testing.assert_close(hooked, folded, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(hooked, base) and not torch.allclose(hooked, zeroed)


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
                              rng=np.random.default_rng(0), mode="zero")
    assert list(table.columns) == ["step", "condition", "repeat", "heads", "accuracy", "delta_accuracy", "mode",
                                   "n_sets"]
    assert (table["n_sets"] == 9).all() and table["heads"].nunique() == 6
    assert list(table["condition"]) == ["top"] + ["random"] * 5
    assert table.loc[0, "heads"] == "L0H0,L2H1"
    np.testing.assert_allclose(table["delta_accuracy"], table["accuracy"] - 1.0)
    assert (table["accuracy"] <= 1.0).all() and (table["delta_accuracy"] < 0).any()
    p = hd.ablation_p_value(table)
    assert 1 / 6 <= p <= 1.0


def test_single_head_table_matches_one_ablation_at_a_time():
    import torch

    model = _gpt2()
    ids = torch.randint(0, 61, (6, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        target = model(ids).logits.argmax(-1)

    def accuracy(m) -> float:
        with torch.no_grad():
            return float((m(ids).logits.argmax(-1) == target).float().mean())

    table = hd.single_head_table(model, accuracy, step=7)
    assert len(table) == 3 * 4 and list(table[["layer", "head"]].iloc[5]) == [1, 1]
    with torch.no_grad(), hd.record_head_means(model) as means:
        model(ids)
    for _, r in table.sample(3, random_state=0).iterrows():
        reference = _gpt2()
        _fold_means_into_bias(reference, [(int(r["layer"]), int(r["head"]))], means)
        assert r["accuracy"] == pytest.approx(accuracy(reference), abs=1e-6)
    assert (table["delta_accuracy"] == table["accuracy"] - 1.0).all()


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
