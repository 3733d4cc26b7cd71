"""Per-phenomenon head effects: a hand-wired model with planted causal and attend-only heads, and
the table's statistics against hand computations."""
import numpy as np
import pandas as pd
import pytest

from grokscope.analyse import head_effects as he
from grokscope.analyse import heads as hd
from grokscope.analyse import planted_heads as ph


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    import torch

    from grokscope.core.checkpoints import Checkpoint, load_model
    from grokscope.core.tokenizer import load_tokenizer
    from grokscope.score.pairs import ScoreOptions, score_pairs

    d = ph.build_planted_head_model(tmp_path_factory.mktemp("planted") / "model")
    model = load_model(Checkpoint(str(d), None, 0, 0, "hf_dir"))
    tok = load_tokenizer(d)
    pairs = ph.planted_head_pairs(120, seed=1)
    attention = score_pairs(model, tok, pairs, pairs, options=ScoreOptions(
        capture_hidden=False, capture_attention=True, progress=False)).attention[:, 0].astype(np.float64)
    with torch.no_grad():
        sweep = he.single_head_sweep(model, hd.score_margin_fn(tok, pairs, pairs))
    return pairs, attention, sweep


def test_planted_model_carries_the_contrast_only_through_its_causal_heads(planted):
    pairs, attention, sweep = planted
    assert sweep.base_correct.all() and (sweep.base_margin > 5).all()
    number = (pairs["phenomenon"] == "number").to_numpy()
    # heads 0, 1, 2 all put their attention on the context noun; head 3 spreads it
    np.testing.assert_allclose(attention[:, 0, :3], 1.0, atol=1e-3)
    assert (attention[:, 0, 3] < 0.5).all()
    # mean-ablating head 0 leaves the number margin a constant of either sign (the mean noun's number),
    # so the decisions are at chance; head 2 likewise for gender; heads 1 and 3 change nothing
    for head, side in ((0, number), (2, ~number)):
        assert 0.25 < sweep.correct[0, head, side].mean() < 0.75
        assert (sweep.base_margin[side] - sweep.margin[0, head, side]).mean() > 10
    np.testing.assert_allclose(sweep.margin[0, 1], sweep.base_margin, atol=1e-4)
    np.testing.assert_allclose(sweep.margin[0, 3], sweep.base_margin, atol=1e-4)


def test_planted_causal_heads_are_found_and_the_attend_only_head_is_not(planted):
    pairs, attention, sweep = planted
    phen = pairs["phenomenon"].to_numpy()
    groups = pairs["critical_phrase"].to_numpy()
    in_a = he.selection_halves(phen, groups, np.random.default_rng(0))
    table = he.effects_table(sweep, phen, groups, in_a, attention, k=3)
    summary = he.head_summary(table).set_index("phenomenon")
    truth = ph.planted_head_truth()
    for p, heads in truth["causal"].items():
        assert summary.loc[p, "causal_heads"] == ",".join(f"L{a}H{b}" for a, b in heads)
        assert summary.loc[p, "best_specificity"] < -5  # harms its phenomenon, not the other
    att_only = table[(table["layer"] == 0) & (table["head"] == 1)]
    assert att_only["selected_by_attention"].all()  # attention ranks it with the causal heads ...
    assert not att_only["causal"].any()  # ... ablation does not call it causal
    assert (summary["attention_selected_causal"] == 1).all()
    off = table[(table["phenomenon"] == "number") & (table["head"] == 2)].iloc[0]
    assert off["delta_margin"] >= -1e-6 and not off["causal"]


def test_selection_halves_keep_clusters_apart_and_split_each_phenomenon_in_two():
    rng = np.random.default_rng(3)
    phen = np.repeat(["a", "b"], [100, 60])
    groups = np.array([f"g{i % 23}" for i in range(160)])
    in_a = he.selection_halves(phen, groups, rng)
    for p in ("a", "b"):
        s = phen == p
        assert not set(groups[s & in_a]) & set(groups[s & ~in_a])
        assert 0.3 < in_a[s].mean() < 0.7


def test_effects_table_against_hand_computation():
    from scipy import stats

    rng = np.random.default_rng(0)
    n, L, H = 40, 2, 2
    phen = np.repeat(["x", "y"], 20)
    groups = np.array([f"c{i // 2}" for i in range(n)])  # clusters of two pairs
    in_a = np.tile([True] * 2 + [False] * 2, 10)
    base = rng.normal(2, 1, n)
    margin = base + rng.normal(0, 0.5, (L, H, n))
    margin[1, 0, phen == "x"] -= 3  # head L1H0 matters for x
    sweep = he.Sweep(base, base > 0, margin, margin > 0, "mean")
    table = he.effects_table(sweep, phen, groups, in_a, None, k=1)
    row = table[(table["phenomenon"] == "x") & (table["layer"] == 1) & (table["head"] == 0)].iloc[0]
    b = (phen == "x") & ~in_a
    d = margin[1, 0] - base
    assert row["delta_margin"] == pytest.approx(d[b].mean())
    assert row["delta_margin_a"] == pytest.approx(d[(phen == "x") & in_a].mean())
    assert row["delta_margin_others"] == pytest.approx(d[phen == "y"].mean())
    assert row["specificity"] == pytest.approx(d[b].mean() - d[phen == "y"].mean())
    assert row["delta_accuracy"] == pytest.approx(((margin[1, 0] > 0).astype(float) - (base > 0))[b].mean())
    cluster_means = [d[b & (groups == g)].mean() for g in sorted(set(groups[b]))]
    assert row["p"] == pytest.approx(stats.ttest_1samp(cluster_means, 0, alternative="less").pvalue)
    assert row["selected_by_ablation"] and row["causal"]
    # Benjamini-Hochberg over the two selected rows, by hand
    sel = table[table["selected_by_ablation"]].sort_values("p")
    assert len(sel) == 2
    p1, p2 = sel["p"].to_numpy()
    assert sel["q"].to_numpy() == pytest.approx([min(2 * p1, p2), p2])
    assert table.loc[~table["selected_by_ablation"], "q"].isna().all()


def test_sweep_in_zero_mode_equals_zeroed_output_weights(tmp_path):
    import torch

    from grokscope.core.checkpoints import Checkpoint, load_model
    from grokscope.core.tokenizer import load_tokenizer

    d = ph.build_planted_head_model(tmp_path / "m", seed=2)
    tok = load_tokenizer(d)
    pairs = ph.planted_head_pairs(20, seed=2)
    fn = hd.score_margin_fn(tok, pairs, pairs)
    with torch.no_grad():
        sweep = he.single_head_sweep(load_model(Checkpoint(str(d), None, 0, 0, "hf_dir")), fn, mode="zero")
        ref = load_model(Checkpoint(str(d), None, 0, 0, "hf_dir"))
        ref.transformer.h[0].attn.c_proj.weight[0:4, :] = 0  # head 0's rows of the output projection
        expected, _ = fn(ref)
    np.testing.assert_allclose(sweep.margin[0, 0], expected, atol=1e-5)
    assert pd.Series(sweep.margin[0, 1] - sweep.base_margin).abs().max() < 1e-5
