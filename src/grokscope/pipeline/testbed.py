"""The ``testbed`` stage: generate grokscope's controlled-exposure corpus and pairs
(:mod:`grokscope.data.testbed`) into the study, when ``[testbed] enabled``."""
from __future__ import annotations

import dataclasses

from grokscope.core.config import StudyConfig
from grokscope.core.errors import ConfigError
from grokscope.core.stage import Stage
from grokscope.core.store import Study, read_json


def run(cfg: StudyConfig, study: Study) -> None:
    """Generate the testbed (corpus, pairs, ground truth) unless it is there with the same settings."""
    from grokscope.data.testbed import generate, write_testbed

    settings_path = study.testbed_file("settings.json")
    want = dataclasses.asdict(cfg.testbed.settings())
    if settings_path.exists() and study.has_testbed():
        have = read_json(settings_path)
        if have == want:
            return
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise ConfigError(
            f"{study.testbed_dir}: a testbed with different settings is already there (keys: {', '.join(diff)}); "
            "remove it or set [testbed] out elsewhere"
        )
    write_testbed(generate(cfg.testbed.settings()), study.testbed_dir)


STAGE = Stage(
    name="testbed", sections=("testbed", "study"), run=run, outputs=lambda s: [s.testbed_dir],
    done=Study.has_testbed, wanted=lambda cfg: "" if cfg.testbed.enabled else "no [testbed] enabled",
)
