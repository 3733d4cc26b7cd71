"""``grokscope pool STUDY STUDY ...``: the verdicts of several analysed runs of one recipe (training
seeds, data orders) pooled, with their spread (:mod:`grokscope.analyse.pooling`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from grokscope.core import store
from grokscope.core.errors import DataError, MissingStageError
from grokscope.core.store import Study


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("studies", nargs="+", metavar="STUDY", help="analysed study directories (two or more)")
    parser.add_argument("--out", default=None, help="where pooled.parquet / pooled.txt go (default: the first "
                                                    "study's analysis/pooled/)")
    parser.add_argument("--alpha", type=float, default=0.05, help="test level of the pooled status (default 0.05)")


def run(args: argparse.Namespace) -> int:
    from grokscope.analyse.pooling import write_pooled

    if len(args.studies) < 2:
        raise DataError("pool: give two or more analysed studies (runs of the same recipe)")
    if not 0 < args.alpha < 1:
        raise DataError(f"pool: --alpha must be in (0, 1), got {args.alpha}")
    timings, fingerprints = [], []
    for spec in args.studies:
        study = Study(Path(spec))
        path = study.analysis_dir / "timing.parquet"
        if not path.exists():
            raise MissingStageError("analysis (analysis/timing.parquet)", str(path), f"grokscope analyse {spec}")
        table, _ = store.read_table(path, f"grokscope analyse {spec} --force")
        timings.append(table)
        meta = store.read_parquet_metadata(study.phrases_path) if study.phrases_path.exists() else {}
        fingerprints.append((spec, meta.get("benchmark_fingerprint")))
    distinct = {fp for _, fp in fingerprints}
    if len(distinct) > 1:
        detail = "; ".join(f"{s}: {fp}" for s, fp in fingerprints)
        raise DataError(f"pool: the studies were scored on different benchmarks ({detail}); pool runs of one "
                        "recipe on one benchmark")
    out = Path(args.out) if args.out else Study(Path(args.studies[0])).analysis_dir / "pooled"
    print(write_pooled(timings, [str(s) for s in args.studies], out, args.alpha))
    print(f"\npooled verdicts written to {out / 'pooled.parquet'}")
    return 0
