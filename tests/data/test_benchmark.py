"""Benchmark loading: BLiMP directories, user jsonl, explicit spans, and bad input."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from grokscope.core.errors import DataError, GrokscopeError
from grokscope.data.benchmark import benchmark_fingerprint, load_pairs


def _write_jsonl(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---- BLiMP -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def blimp(blimp_dir: Path):
    return load_pairs(blimp_dir, skip_invalid=True)


def test_blimp_directory_loads_every_paradigm(blimp, blimp_dir: Path) -> None:
    files = sorted(p.stem for p in blimp_dir.glob("*.jsonl"))
    assert len(files) == 67
    assert sorted(blimp["uid"].unique()) == files
    assert blimp["phenomenon"].nunique() == 13  # the 13 linguistics_term values
    # 67,000 lines, of which BLiMP itself has 7 pairs whose two sentences are identical
    assert len(blimp) == 67_000 - 7
    assert len(blimp.attrs["skipped"]) == 7
    for col in ("uid", "pair_id", "phenomenon", "good", "bad", "one_prefix_prefix", "two_prefix_word",
                "explicit_critical_start", "explicit_context_end"):
        assert col in blimp.columns
    assert str(blimp["pair_id"].dtype) == "int64"
    first = blimp.iloc[0]  # adjunct_island.jsonl line 1, read independently
    raw = json.loads((blimp_dir / "adjunct_island.jsonl").read_text().splitlines()[0])
    assert (first.uid, first.pair_id, first.good, first.bad) == (
        raw["UID"], int(raw["pairID"]), raw["sentence_good"], raw["sentence_bad"])
    assert (blimp["explicit_critical_start"] == -1).all()


def test_blimp_identical_pairs_are_errors_by_default(blimp_dir: Path) -> None:
    with pytest.raises(DataError, match=r"passive_1\.jsonl:325: good and bad sentences are identical"):
        load_pairs(blimp_dir, paradigms=["passive_1"])


def test_paradigm_filter_and_seeded_subsample(blimp_dir: Path) -> None:
    df = load_pairs(blimp_dir, paradigms=["determiner_noun_agreement_1", "wh_island"])
    assert sorted(df["uid"].unique()) == ["determiner_noun_agreement_1", "wh_island"]
    assert len(df) == 2000
    a = load_pairs(blimp_dir, paradigms=["wh_island"], pairs_per_paradigm=10, seed=3)
    b = load_pairs(blimp_dir, paradigms=["wh_island"], pairs_per_paradigm=10, seed=3)
    c = load_pairs(blimp_dir, paradigms=["wh_island"], pairs_per_paradigm=10, seed=4)
    assert len(a) == 10 and a["pair_id"].tolist() == b["pair_id"].tolist()
    assert a["pair_id"].is_monotonic_increasing  # benchmark order kept
    assert a["pair_id"].tolist() != c["pair_id"].tolist()
    with pytest.raises(DataError, match="not_a_paradigm"):
        load_pairs(blimp_dir, paradigms=["not_a_paradigm"])


# ---- user jsonl --------------------------------------------------------------------------
def test_user_jsonl_field_names_and_explicit_spans(tmp_path: Path) -> None:
    f = _write_jsonl(tmp_path / "mine.jsonl", [
        {"good": "Raymond is selling this sketch.", "bad": "Raymond is selling this sketches.",
         "uid": "det", "pair_id": 7, "phenomenon": "agreement", "critical": "sketch", "context": [19, 23]},
        {"sentence_good": "The cat sleeps.", "sentence_bad": "The cat sleep.", "UID": "sv", "pairID": "3",
         "linguistics_term": "agreement", "note": "kept"},
        {"good": "A dog barks.", "bad": "A dog bark."},
    ])
    df = load_pairs(f)
    assert df["uid"].tolist() == ["det", "sv", "mine"]  # default uid: the file name
    assert df["pair_id"].tolist() == [7, 3, 2]  # default pair_id: 0-based line
    assert df["phenomenon"].tolist() == ["agreement", "agreement", "mine"]
    r = df.iloc[0]
    # "sketch" is at characters 24..30 of the good sentence; [19, 23] is "this"
    assert (r.explicit_critical_start, r.explicit_critical_end) == (24, 30)
    assert r.good[r.explicit_critical_start:r.explicit_critical_end] == "sketch"
    assert (r.explicit_context_start, r.explicit_context_end) == (19, 23)
    assert df.iloc[1]["note"] == "kept"
    assert df.iloc[2].explicit_critical_start == -1


def test_explicit_word_matches_whole_words_only(tmp_path: Path) -> None:
    f = _write_jsonl(tmp_path / "w.jsonl", [
        {"good": "The sketchbook and the sketch.", "bad": "The sketchbook and the sketches.", "critical": "sketch"},
    ])
    r = load_pairs(f).iloc[0]
    assert r.good[r.explicit_critical_start:r.explicit_critical_end] == "sketch"
    assert r.explicit_critical_start == 23


def test_fingerprint_tracks_content(tmp_path: Path) -> None:
    rows = [{"good": "A dog barks.", "bad": "A dog bark."}, {"good": "Dogs bark.", "bad": "Dogs barks."}]
    a = load_pairs(_write_jsonl(tmp_path / "a.jsonl", rows))
    b = load_pairs(_write_jsonl(tmp_path / "a2.jsonl", rows))
    b["uid"] = "a"
    c = a.copy()
    c.loc[1, "bad"] = "Dogs barked."
    fa = benchmark_fingerprint(a)
    assert len(fa) == 64 and fa == benchmark_fingerprint(b)
    assert fa != benchmark_fingerprint(c)
    assert fa != benchmark_fingerprint(a.iloc[::-1])


# ---- bad input ---------------------------------------------------------------------------
BAD_LINES = [
    ("{not json", r"bad\.jsonl:2: not valid JSON"),
    (json.dumps({"bad": "A dog bark."}), r"bad\.jsonl:2: no 'good' sentence"),
    (json.dumps({"good": "A dog barks."}), r"bad\.jsonl:2: no 'bad' sentence"),
    (json.dumps({"good": "A dog barks.", "bad": "A dog barks."}), r"bad\.jsonl:2: good and bad sentences are identical"),
    (json.dumps({"good": "A dog barks.", "bad": "A dog bark.", "critical": "cat"}),
     r"bad\.jsonl:2: critical 'cat' does not occur as a whole word"),
    (json.dumps({"good": "A dog barks.", "bad": "A dog bark.", "context": [5, 40]}),
     r"bad\.jsonl:2: context span \[5, 40\] is not inside the good sentence"),
    (json.dumps({"good": "A dog barks.", "bad": "A dog bark.", "critical": 3}),
     r"bad\.jsonl:2: critical must be a word of the good sentence or a \[start, end\] span"),
    (json.dumps({"good": "A dog barks.", "bad": "A dog bark.", "pair_id": "x1"}), r"bad\.jsonl:2: pair_id must be an integer"),
    (json.dumps(["A dog barks.", "A dog bark."]), r"bad\.jsonl:2: expected a JSON object"),
]


@pytest.mark.parametrize("line, message", BAD_LINES)
def test_bad_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    good = json.dumps({"good": "Dogs bark.", "bad": "Dogs barks."})
    f = _write_jsonl(tmp_path / "bad.jsonl", [good, line, good.replace("Dogs", "Cats")])
    with pytest.raises(DataError, match=message):
        load_pairs(f)
    df = load_pairs(f, skip_invalid=True)
    assert df["good"].tolist() == ["Dogs bark.", "Cats bark."]
    assert len(df.attrs["skipped"]) == 1 and "bad.jsonl:2" in df.attrs["skipped"][0]


def test_missing_and_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no_such_dir: benchmark not found"):
        load_pairs(tmp_path / "no_such_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no \\*.jsonl files"):
        load_pairs(tmp_path / "empty")
    f = _write_jsonl(tmp_path / "all_bad.jsonl", ["{oops"])
    with pytest.raises(DataError, match="no valid minimal pairs"):
        load_pairs(f, skip_invalid=True)
    dup = _write_jsonl(tmp_path / "dup.jsonl", [{"good": "A b.", "bad": "A c.", "pair_id": 1}] * 2)
    with pytest.raises(DataError, match=r"pair \(dup, 1\) occurs more than once"):
        load_pairs(dup)


def test_hub_without_datasets_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as when not installed
    with pytest.raises(GrokscopeError, match="needs the 'datasets' package"):
        load_pairs("nyu-mll/blimp")


def test_hub_loader_reads_configs_through_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub path goes through datasets.get_dataset_config_names / load_dataset (faked here:
    the hub is not reachable from tests)."""
    import types

    calls: list[tuple] = []
    rows = {"wh_island": [{"sentence_good": "Who did Al see?", "sentence_bad": "Who did Al see Bo?",
                           "UID": "wh_island", "pairID": "0", "linguistics_term": "island_effects"}]}
    fake = types.SimpleNamespace(
        get_dataset_config_names=lambda name: calls.append(("configs", name)) or list(rows),
        load_dataset=lambda name, config, split: calls.append(("load", name, config, split)) or rows[config],
    )
    monkeypatch.setitem(sys.modules, "datasets", fake)
    df = load_pairs("nyu-mll/blimp")
    assert calls == [("configs", "nyu-mll/blimp"), ("load", "nyu-mll/blimp", "wh_island", "train")]
    assert df[["uid", "pair_id", "good"]].values.tolist() == [["wh_island", 0, "Who did Al see?"]]

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(get_dataset_config_names=offline))
    with pytest.raises(GrokscopeError, match="could not load 'nyu-mll/blimp'.*local directory"):
        load_pairs("hf:nyu-mll/blimp")
