"""The event-study section: labels in event-time order, the pre-trend count, the figure, and a
missing table named with the command that makes it."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from grokscope.report.event_section import event_order, section_event_study
from grokscope.report.format import _Writer


def _events() -> pd.DataFrame:
    labels = ["<-2", "-2", "0", "1", "2", ">2"]
    rows = []
    for level, group in (("all", "all"), ("phenomenon", "binding"), ("phenomenon", "ellipsis")):
        for outcome in ("correct", "margin"):
            for i, lab in enumerate(labels):
                est = np.nan if group == "ellipsis" else 0.1 * i
                rows.append({"level": level, "group": group, "outcome": outcome, "event_time": lab, "estimate": est,
                             "se": 0.01, "ci_low": est - 0.02, "ci_high": est + 0.02,
                             "p": 0.01 if lab == "<-2" else 0.5, "n_exposed": 10})
    return pd.DataFrame(rows)


def test_event_order_puts_binned_ends_outside():
    assert event_order(pd.Series(["0", "<-4", ">4", "-4", "3"])).tolist() == [0.0, -5.0, 5.0, -4.0, 3.0]


def test_section_counts_pre_trends_and_writes_the_figure(tmp_path):
    inp = SimpleNamespace(tables={"event_study": _events()}, study=SimpleNamespace(root=tmp_path))
    w = _Writer(tmp_path / "report", ("png",))
    sec = section_event_study(inp, w)
    assert sec.missing == ""
    assert "(here 1 of 2 differ at p &lt; 0.05)" in sec.body  # "<-2" and "-2" are the pre-event times
    assert "beyond ±2 are binned" in sec.body
    assert (tmp_path / "report" / "figures" / "event_study.png").exists()
    assert (tmp_path / "report" / "tables" / "event_study.csv").exists()


def test_missing_table_names_the_command(tmp_path):
    inp = SimpleNamespace(tables={"event_study": None}, study=SimpleNamespace(root=tmp_path))
    sec = section_event_study(inp, _Writer(tmp_path / "report", ("png",)))
    assert sec.missing == "event_study" and f"grokscope analyse {tmp_path}" in sec.body
