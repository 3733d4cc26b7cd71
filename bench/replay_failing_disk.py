"""Issue #21 on real failing disks, not simulated ones: every stage and the demo on a study that
lives on a read-only filesystem, ``prepare`` on a 200 KiB and a 100 KiB tmpfs and ``score`` with 8 KiB free.

Each case must exit 2 with one ``grokscope ...`` message naming the path and the errno reason, no
traceback, no temporary file left, and every earlier output byte-identical (SHA-256 of every file
before and after; new resumable work files may appear). Needs root (it mounts tmpfs filesystems and
unmounts them at the end); the default test suite checks the same paths with a simulated failing
``os.replace`` (tests/test_bad_inputs.py), which needs no privileges.

    python bench/replay_failing_disk.py            # builds a small demo study first (~30 s)
    python bench/replay_failing_disk.py --demo DIR # or reuses one made by `grokscope demo --out DIR`
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

GROKSCOPE = [sys.executable, "-c", "import sys; from grokscope import cli; sys.exit(cli.main(sys.argv[1:]))"]


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".lock-")}


def mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)


def remount_ro(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


def umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], check=False)


def run_case(name: str, argv: list[str], watched: Path, reason: str, cwd: Path) -> dict[str, object]:
    before = digest(watched) if watched.exists() else {}
    proc = subprocess.run([*GROKSCOPE, *argv], cwd=cwd, capture_output=True, text=True, timeout=600)
    after = digest(watched) if watched.exists() else {}
    kept = all(after.get(name) == sha for name, sha in before.items())  # new work files (resumable) may appear
    msgs = [line for line in proc.stderr.splitlines() if line.startswith("grokscope")]
    temps = [p.name for p in watched.rglob("*") if p.name.endswith((".tmp", ".partial"))] if watched.exists() else []
    ok = (proc.returncode == 2 and "Traceback" not in proc.stderr and len(msgs) == 1 and reason in msgs[0]
          and kept and not temps)
    return {"case": name, "exit": proc.returncode, "one message": len(msgs) == 1, "unchanged": kept,
            "temps left": len(temps), "ok": ok, "message": msgs[0] if msgs else proc.stderr.strip()[-300:]}


def build_demo(where: Path) -> Path:
    subprocess.run([*GROKSCOPE, "demo", "--out", str(where), "--steps", "40", "--model-size", "tiny"], check=True,
                   capture_output=True)
    return where


def replay(demo: Path, base: Path) -> list[dict[str, object]]:
    results = []
    ro = base / "ro"
    mount_tmpfs(ro, "64m")
    try:
        shutil.copytree(demo, ro / "demo")
        remount_ro(ro)
        cfg = str(ro / "demo" / "demo.toml")
        study = ro / "demo" / "study"
        erofs = "[errno EROFS]"
        tb, ck = str(ro / "demo" / "testbed"), str(study / "run" / "checkpoints")
        cases = {  # a new output on the read-only filesystem, or an existing one redone with --force
            "prepare": ["prepare", "--corpus", f"{tb}/corpus.jsonl", "--tokenizer", str(study / "tokens" / "tokenizer"),
                        "--seq-len", "32", "--out", str(ro / "demo" / "new"), "--no-progress"],
            "train": ["train", "--tokens", str(study / "tokens"), "--out", str(ro / "demo" / "new"), "--n-layer", "1",
                      "--n-embd", "32", "--n-head", "2", "--max-steps", "4"],
            "phrases": ["phrases", "--benchmark", tb, "--out", str(study), "--force"],
            "exposure": ["exposure", "--phrases", str(study), "--tokens", str(study / "tokens"), "--checkpoints", ck,
                         "--force"],
            "score": ["score", "--out", str(study), "--benchmark", tb, "--checkpoints", ck, "--force"],
            "analyse": ["analyse", "--config", cfg, "--force", str(study)],
            "report": ["report", "--config", cfg, str(study)],
            "run --reset exposure": ["run", cfg, "--reset", "exposure"],
            "demo": ["demo", "--out", str(ro / "demo" / "new"), "--steps", "4"],
        }
        for name, argv in cases.items():
            results.append(run_case(f"{name} on a read-only filesystem", argv, ro / "demo", erofs, base))
    finally:
        umount(ro)

    shutil.copy(demo / "testbed" / "corpus.jsonl", base / "corpus.jsonl")
    for size, when in (("200k", "the stream does not fit"), ("100k", "tokenizing fills the disk mid-write")):
        small = base / f"small{size}"  # prepare: 200 KiB hold the tokenized documents, not the stream
        mount_tmpfs(small, size)
        try:
            (small / "s").mkdir()
            results.append(run_case(f"prepare on a {size[:-1]} KiB filesystem ({when})", [
                "prepare", "--corpus", str(base / "corpus.jsonl"), "--tokenizer",
                str(demo / "study" / "tokens" / "tokenizer"), "--out", str(small / "s"), "--seq-len", "32"],
                small / "s", "[errno ENOSPC]", base))
        finally:
            umount(small)

    full = base / "full"  # score: the study without its scores fits, with 8 KiB to spare
    study = demo / "study"
    mount_tmpfs(full, "64m")
    try:
        shutil.copytree(study, full / "study", ignore=lambda d, names: ["scores", "report", "analysis"]
                        if Path(d) == study else [])
        free = shutil.disk_usage(full).free
        with open(full / "filler", "wb") as f:  # what other users of the disk have written
            f.truncate(0)
            f.write(b"\0" * (free - 8192))
        results.append(run_case("score with 8 KiB free", [
            "score", "--out", str(full / "study"), "--benchmark", str(demo / "testbed" / "pairs.jsonl"),
            "--hidden-pairs", "400", "--checkpoints", str(full / "study" / "run" / "checkpoints")],
            full / "study", "[errno ENOSPC]", base))
    finally:
        umount(full)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, help="a directory made by `grokscope demo --out DIR` (default: build one)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("replay_failing_disk: needs root to mount tmpfs filesystems", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="grokscope-replay-") as tmp:
        demo = (args.demo or build_demo(Path(tmp) / "demo")).resolve()
        results = replay(demo, Path(tmp))
    for r in results:
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['case']:<48} exit {r['exit']}  one message {r['one message']}  "
              f"unchanged {r['unchanged']}  temps {r['temps left']}\n      {r['message']}")
    bad = [r for r in results if not r["ok"]]
    print(f"\n{len(results) - len(bad)} of {len(results)} cases ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
