"""Study config validation: unknown keys and wrong types are errors naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from grokscope.core.config import config_from_dict, dump_config, load_config
from grokscope.core.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "study.toml"
    p.write_text(text)
    return p


def test_defaults_and_values_round_trip(tmp_path: Path) -> None:
    p = write(tmp_path, '[train]\nn_layer = 2\nlr = 3e-4\n[analyse]\nmin_count = 3\n')
    cfg = load_config(p)
    assert cfg.train.n_layer == 2
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.analyse.min_count == 3
    assert cfg.train.n_embd == 256  # default kept
    # what the study keeps (study.toml) loads back to the same config
    again = load_config(write(tmp_path, dump_config(cfg)))
    assert again.to_dict() == cfg.to_dict()


def test_int_is_accepted_where_float_expected(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[train]\nlr = 1\n"))
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1.0


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[train]\nn_layers = 2\n", "unknown key 'n_layers' (did you mean 'n_layer'?)"),
        ("[trian]\nn_layer = 2\n", "unknown section [trian] (did you mean 'train'?)"),
        ("[train]\nn_layer = \"two\"\n", "key 'n_layer': expected an integer"),
        ("[train]\nn_layer = 2.5\n", "key 'n_layer': expected an integer"),
        ("[train]\nenabled = 1\n", "key 'enabled': expected true or false"),
        ("[score]\nconvention = \"harness\"\n", "key 'convention' must be one of"),
        ("[train]\nn_embd = 100\nn_head = 3\n", "must be divisible by n_head"),
        ("[analyse]\nci = 1.5\n", "key 'ci' must be in (0, 1]"),
        ("[exposure]\nvariants = [\"mid\", \"start\"]\n", "unknown variant(s) ['start']"),
        ("[data]\ncorpus = 3\n", "key 'corpus': expected a list"),
        ("train = 3\n", "[train] must be a table"),
        ("[train\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert needle in str(e.value)
    assert str(p) in str(e.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_paths_are_relative_to_the_config(tmp_path: Path) -> None:
    sub = tmp_path / "studies"
    sub.mkdir()
    cfg = load_config(write(sub, '[study]\nout = "../runs/x"\n[data]\ncorpus = "c.jsonl"\n'))
    assert cfg.study_dir == (sub / "../runs/x")
    assert cfg.data.corpus == ["c.jsonl"]  # a single string is a list of one
    assert cfg.resolve_path(cfg.data.corpus[0]) == sub / "c.jsonl"
    default = load_config(write(sub, ""))
    assert default.study_dir == sub / "study"


def test_config_from_dict_without_file() -> None:
    cfg = config_from_dict({"score": {"batch_size": 7}})
    assert cfg.score.batch_size == 7
    with pytest.raises(ConfigError, match="must be positive"):
        config_from_dict({"score": {"batch_size": 0}})
