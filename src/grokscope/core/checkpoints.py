"""Find the checkpoints to score, and what each one has seen.

A :class:`Checkpoint` is a model ``AutoModelForCausalLM`` can load (a local Hugging Face
directory or a hub id with a revision) together with its training **step** and **tokens
seen**. Scoring refuses to guess either: they come from grokscope's own run metadata
(``grokscope_checkpoint.json``), from a known suite's schedule (Pythia's ``stepN`` revisions:
1024 rows × 2049 tokens per step), or from the user (``--step`` / ``--tokens-seen`` /
``--tokens-per-step``).

Accepted specs (:func:`discover_checkpoints`):

* a grokscope study, run, or ``run/checkpoints`` directory → every
  ``step_*/grokscope_checkpoint.json`` below it;
* one checkpoint directory (grokscope's, or any HF causal-LM dir with ``config.json`` + weights);
* a glob of such directories (``runs/x/checkpoint-*``);
* a hub id with an optional revision: ``EleutherAI/pythia-160m@step1000`` (loaded when scored;
  needs the hub to be reachable).

:func:`load_model` loads one for scoring (sdpa attention unless attention weights are wanted,
GPT-2's activation fused, eval mode); :func:`check_tokenizer_matches` refuses a tokenizer whose
ids do not fit the model's embedding.
"""
from __future__ import annotations

import contextlib
import glob
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grokscope.core import heap
from grokscope.core.errors import ConfigError, DataError
from grokscope.core.paths import has_glob, is_hub_id
from grokscope.core.store import RunLayout, Study

CHECKPOINT_JSON = "grokscope_checkpoint.json"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.safetensors.index.json",
                   "pytorch_model.bin.index.json", "*.pt", "*.pth")


# Known training schedules of public suites: tokens seen per optimizer step.
KNOWN_TOKENS_PER_STEP = {
    "EleutherAI/pythia": 1024 * 2049,  # 1024 rows of 2049 tokens per step (Pythia's packing)
}
_STEP_IN_NAME = re.compile(r"(?:^|[^a-z])(?:step|checkpoint)[-_]?(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Checkpoint:
    """One model to score: where it is, and how far into training it was saved."""

    path: str  # local directory, or a hub id
    revision: str | None  # hub revision (branch/tag/commit); None for local directories
    step: int
    tokens_seen: int
    source: str  # "grokscope" | "hf_dir" | "hub"

    @property
    def is_local(self) -> bool:
        return self.source != "hub"

    @property
    def label(self) -> str:
        return f"{self.path}@{self.revision}" if self.revision else self.path


def discover_checkpoints(
    specs: list[str] | str,
    step: int | None = None,
    tokens_seen: int | None = None,
    tokens_per_step: int | None = None,
    errors: list[str] | None = None,
) -> list[Checkpoint]:
    """Every checkpoint named by ``specs`` (see the module docstring), sorted by step.

    ``step``/``tokens_seen`` apply to a single plain HF directory (or hub id) whose step is not
    recorded; ``tokens_per_step`` turns a step read from a directory name or a ``stepN``
    revision into tokens seen. A checkpoint whose step or tokens seen stays unknown is a
    :class:`DataError`. If ``errors`` is a list, problems are appended to it (and that
    checkpoint skipped) instead of raised, so callers can score the rest.
    """
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise DataError("no checkpoints given (expected directories, globs or hub ids)")
    found: list[Checkpoint] = []
    for spec in specs:
        try:
            found.extend(_from_spec(spec, step, tokens_seen, tokens_per_step, errors))
        except DataError as e:
            if errors is None:
                raise
            errors.append(str(e))
    if (step is not None or tokens_seen is not None) and len(found) > 1:
        raise DataError(f"--step/--tokens-seen name the step of one checkpoint; {len(found)} were given "
                        f"({', '.join(specs)}): leave them out (each checkpoint's own step is used)")
    for c in found:  # a checkpoint that records its step: a different --step is a mistake, not an override
        if c.source == "grokscope" and ((step is not None and step != c.step)
                                        or (tokens_seen is not None and tokens_seen != c.tokens_seen)):
            raise DataError(f"{c.path}: records step {c.step:,} ({c.tokens_seen:,} tokens seen), but --step/"
                            f"--tokens-seen gave {step if step is not None else '-'} / "
                            f"{tokens_seen if tokens_seen is not None else '-'}; leave them out for a grokscope "
                            "checkpoint")
    _check_unique_steps(found)
    return sorted(found, key=lambda c: (c.step, c.label))


def _from_spec(spec: str, step: int | None, tokens_seen: int | None, tokens_per_step: int | None,
               errors: list[str] | None) -> list[Checkpoint]:
    path = Path(spec).expanduser()
    if has_glob(spec):
        matches = sorted(glob.glob(str(path)))
        dirs = [Path(m) for m in matches if Path(m).is_dir()]
        if not dirs:
            raise DataError(f"checkpoint glob '{spec}' matched no directories")
        out = []
        for d in dirs:
            try:
                out.extend(_from_dir(d, step, tokens_seen, tokens_per_step, in_glob=True, errors=errors))
            except DataError as e:
                if errors is None:
                    raise
                errors.append(str(e))
        return out
    if path.exists():
        if not path.is_dir():
            raise DataError(f"{path}: a checkpoint must be a directory (a Hugging Face model dir), got a file")
        return _from_dir(path, step, tokens_seen, tokens_per_step, in_glob=False, errors=errors)
    if is_hub_id(spec):
        parent = path.parent
        if str(parent) not in ("", ".") and parent.is_dir() and not spec.startswith("hf:"):
            # runs/step100 beside an existing runs/: a missing local directory, not a hub id to wait for
            raise DataError(f"checkpoint '{spec}': directory does not exist (not looked up on the hub: "
                            f"{parent} is a local directory)")
        return [_from_hub_id(spec, step, tokens_seen, tokens_per_step)]
    raise DataError(f"checkpoint '{spec}': directory does not exist")


def _from_dir(path: Path, step: int | None, tokens_seen: int | None, tokens_per_step: int | None,
              in_glob: bool, errors: list[str] | None = None) -> list[Checkpoint]:
    if (path / CHECKPOINT_JSON).exists():
        return [_grokscope_checkpoint(path)]
    if not (path / "config.json").exists():
        # A study, run or checkpoints directory: every grokscope checkpoint below it.
        for base in (Study(path).checkpoints_dir, RunLayout(path).checkpoints_dir, path):
            metas = sorted(base.glob(f"step_*/{CHECKPOINT_JSON}"))
            if metas:
                out = []
                for m in metas:
                    try:
                        out.append(_grokscope_checkpoint(m.parent))
                    except DataError as e:
                        if errors is None:
                            raise
                        errors.append(str(e))
                return out
    _require_hf_dir(path)
    resolved_step = step if (step is not None and not in_glob) else _step_from_name(path.name)
    if resolved_step is None:
        raise DataError(
            f"{path}: training step unknown (no {CHECKPOINT_JSON}, no step in the directory name); "
            "give it with --step N --tokens-seen N"
        )
    tokens = _tokens(resolved_step, tokens_seen if not in_glob else None, tokens_per_step, None)
    if tokens is None:
        raise DataError(
            f"{path}: tokens seen at step {resolved_step} unknown; give --tokens-seen N "
            "(or --tokens-per-step N)"
        )
    return [Checkpoint(str(path.resolve()), None, int(resolved_step), int(tokens), "hf_dir")]


def _grokscope_checkpoint(path: Path) -> Checkpoint:
    meta_path = path / CHECKPOINT_JSON
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{meta_path}: not readable JSON: {e}") from None
    for key in ("step", "tokens_seen"):
        if not isinstance(meta.get(key), int) or meta[key] < 0:
            raise DataError(f"{meta_path}: expected a non-negative integer '{key}', got {meta.get(key)!r}")
    _require_hf_dir(path)
    return Checkpoint(str(path.resolve()), None, meta["step"], meta["tokens_seen"], "grokscope")


def _require_hf_dir(path: Path) -> None:
    if not (path / "config.json").exists():
        raise DataError(f"{path}: not a Hugging Face model directory (no config.json)")
    if not any(any(path.glob(p)) for p in WEIGHT_PATTERNS):
        raise DataError(
            f"{path}: no model weights (expected model.safetensors, pytorch_model.bin or a sharded index)"
        )


def _step_from_name(name: str) -> int | None:
    m = _STEP_IN_NAME.search(name)
    return int(m.group(1)) if m else None


def _from_hub_id(spec: str, step: int | None, tokens_seen: int | None,
                 tokens_per_step: int | None) -> Checkpoint:
    repo, _, rev = spec.partition("@")
    revision = rev or None
    resolved_step = step
    if resolved_step is None and revision:
        m = re.fullmatch(r"(?:global_?)?step[-_]?(\d+)(?:[-_].*)?", revision)
        resolved_step = int(m.group(1)) if m else None
    if resolved_step is None:
        raise DataError(
            f"hub checkpoint '{spec}': training step unknown; use a revision like @step1000 or give --step N"
        )
    tokens = _tokens(resolved_step, tokens_seen, tokens_per_step, repo)
    if tokens is None:
        raise DataError(
            f"hub checkpoint '{spec}': tokens seen at step {resolved_step} unknown; give --tokens-seen N "
            "or --tokens-per-step N"
        )
    return Checkpoint(repo, revision, int(resolved_step), int(tokens), "hub")


def _tokens(step: int, tokens_seen: int | None, tokens_per_step: int | None, repo: str | None) -> int | None:
    if tokens_seen is not None:
        return tokens_seen
    if tokens_per_step is not None:
        return step * tokens_per_step
    if repo is not None:
        for prefix, per_step in KNOWN_TOKENS_PER_STEP.items():
            if repo.startswith(prefix):
                return step * per_step
    return None


def pythia_steps() -> list[int]:
    """Pythia's 154 checkpoints: 0, 1, 2, 4, …, 512, then every 1000 to 143000."""
    return [0] + [2**i for i in range(10)] + list(range(1000, 143001, 1000))


def checkpoint_dirs_steps(spec: str) -> list[int]:
    """Steps of the checkpoints named by ``spec`` (a checkpoint dir, a run/study dir, a glob;
    see :func:`grokscope.core.checkpoints.discover_checkpoints`)."""
    return [c.step for c in discover_checkpoints([spec])]


def checkpoint_steps(specs: Sequence[str]) -> list[int]:
    """Sorted unique steps from items that are step numbers (comma lists allowed), ``pythia``,
    or checkpoint directories / globs."""
    steps: list[int] = []
    for spec in specs:
        for item in (x.strip() for x in str(spec).split(",")):
            if not item:
                continue
            if item.lstrip("-").isdigit():
                s = int(item)
                if s < 0:
                    raise ConfigError(f"checkpoints: step {s} is negative")
                steps.append(s)
            elif item.lower() == "pythia":
                steps += pythia_steps()
            else:
                steps += checkpoint_dirs_steps(item)
    if not steps:
        raise ConfigError("checkpoints: no steps given (expected e.g. '0,1,2,4,1000', 'pythia' or checkpoint dirs)")
    return sorted(set(steps))


def _check_unique_steps(found: list[Checkpoint]) -> None:
    by_step: dict[int, Checkpoint] = {}
    for c in found:
        if c.step in by_step and by_step[c.step].label != c.label:
            raise DataError(
                f"two checkpoints claim step {c.step}: {by_step[c.step].label} and {c.label}; "
                "score them into different studies"
            )
        by_step[c.step] = c
    # exact duplicates (the same checkpoint named twice) are dropped
    found[:] = list({c.label: c for c in found}.values())


# ---------------------------------------------------------------------------------------------
# Loading a checkpoint for scoring
# ---------------------------------------------------------------------------------------------
def _torch_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_model(ckpt: Checkpoint, device: str = "cpu", dtype: str = "auto", attention: bool = False,
               progress: bool = True) -> Any:
    """``AutoModelForCausalLM`` for a checkpoint, in eval mode; eager attention only when
    attention weights are wanted (sdpa otherwise). ``progress=False`` hides transformers'
    "Loading weights" bar."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype, device),
                              "attn_implementation": "eager" if attention else "sdpa"}
    if ckpt.revision:
        kwargs["revision"] = ckpt.revision
    try:
        if heap.is_paused():  # the console script: settle once the libraries are in, before the weights
            _import_architecture(ckpt.path, ckpt.revision)
            heap.settle()
        with contextlib.nullcontext() if progress else quiet_transformers_progress():
            model = _from_pretrained_sdpa_or_eager(AutoModelForCausalLM, ckpt.path, kwargs)
    except Exception as e:  # noqa: BLE001 - any loading failure is an input problem here
        raise DataError(f"{ckpt.label}: could not load the model: {type(e).__name__}: {e}") from None
    fuse_activations(model)
    return model.to(device).eval()


def _import_architecture(path: str, revision: str | None) -> None:
    """Import the checkpoint's model class: transformers imports an architecture's module only
    when a model of it is first built."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    config = AutoConfig.from_pretrained(path, **({"revision": revision} if revision else {}))
    MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)


def _from_pretrained_sdpa_or_eager(auto_class: Any, path: str, kwargs: dict[str, Any]) -> Any:
    """``from_pretrained``, falling back to eager attention for an architecture without sdpa."""
    try:
        return auto_class.from_pretrained(path, **kwargs)
    except ValueError as e:
        if kwargs["attn_implementation"] != "sdpa" or "sdpa" not in str(e).lower():
            raise
        return auto_class.from_pretrained(path, **{**kwargs, "attn_implementation": "eager"})


@contextlib.contextmanager
def quiet_transformers_progress() -> Iterator[None]:
    """Hide transformers' own progress bars ("Loading weights", "Writing model shards") for
    the duration, then restore the global setting as it was."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def fuse_activations(model: Any) -> int:
    """Swap transformers' Python tanh-GELU (``gelu_new``, GPT-2's activation: five elementwise
    kernels) for the same function as one fused kernel (``gelu_pytorch_tanh``); outputs differ
    by < 1e-6 and the activation runs 2x faster on CPU. Returns how many modules were swapped."""
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is NewGELUActivation:
                setattr(parent, name, GELUTanh())
                swapped += 1
    return swapped


def load_checkpoint_tokenizer(ckpt: Checkpoint, override: str = "", allow_mismatch: bool = False) -> Any:
    """The checkpoint's own tokenizer, or ``override``; an override that differs (fingerprint) from
    a tokenizer the checkpoint carries is refused unless ``allow_mismatch``."""
    from grokscope.core.tokenizer import load_tokenizer, tokenizer_fingerprint

    _check_model_config(ckpt)
    if override:
        tok = load_tokenizer(override)
        if not allow_mismatch and ckpt.is_local and _has_tokenizer_files(Path(ckpt.path)):
            own = load_tokenizer(ckpt.path)
            mine, theirs = tokenizer_fingerprint(tok), tokenizer_fingerprint(own)
            if mine != theirs:
                raise DataError(
                    f"{ckpt.label}: --tokenizer {override} (fingerprint {mine}) differs from the tokenizer the "
                    f"checkpoint carries (fingerprint {theirs}); drop --tokenizer, or pass "
                    "--allow-tokenizer-mismatch if the ids really mean the same tokens")
        check_tokenizer_encodes(tok, ckpt.label)
        return tok
    try:
        tok = load_tokenizer(ckpt.path)
    except DataError as e:
        raise DataError(f"{e}; pass the model's tokenizer with --tokenizer") from None
    check_tokenizer_encodes(tok, ckpt.label)
    return tok


PROBE_TEXT = " The cat sat on the mat."


def _check_model_config(ckpt: Checkpoint) -> None:
    """A broken ``config.json`` named as such (the tokenizer loader reads it too, and used to be blamed)."""
    cfg = Path(ckpt.path) / "config.json"
    if not ckpt.is_local or not cfg.is_file():
        return
    try:
        json.loads(cfg.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{cfg}: the model's config is not valid JSON ({e}); restore it from the checkpoint's "
                        "source") from None


def _has_tokenizer_files(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in ("tokenizer.json", "tokenizer_config.json",
                                                                 "vocab.json"))


def check_tokenizer_encodes(tokenizer: Any, where: str) -> None:
    """A tokenizer that encodes a plain English sentence to no ids (an empty vocabulary, as a
    ``GPT2Tokenizer`` saved from vocab.json/merges.txt by transformers 5 loads) would score
    every sentence as 0 tokens and log-prob 0: an error naming ``where``."""
    ids = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    if not ids:
        raise DataError(f"{where}: its tokenizer encodes {PROBE_TEXT.strip()!r} to no tokens (an empty or broken "
                        f"vocabulary of {len(tokenizer.get_vocab())} entries); pass a working tokenizer with "
                        "--tokenizer")


def check_tokenizer_matches(tokenizer: Any, model: Any, where: str) -> None:
    """The tokenizer's ids must index the model's embedding (ids >= rows would crash or,
    worse, silently read another token's row on some devices)."""
    from grokscope.core.tokenizer import vocab_size

    rows = model.get_input_embeddings().weight.shape[0]
    n = vocab_size(tokenizer)
    if n > rows:
        raise DataError(
            f"{where}: the tokenizer has {n} ids but the model's embedding has {rows} rows; "
            "the tokenizer does not belong to this model (pass the right one with --tokenizer)"
        )
