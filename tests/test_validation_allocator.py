"""validation/allocator.toml: real CUDA OOM messages from LLM training runs, read for the caching
allocator's slack and the memory outside PyTorch (validation/allocator_fit.py)."""

from __future__ import annotations

import datetime
import sys
import tomllib
from pathlib import Path

import pytest

VALIDATION = Path(__file__).resolve().parent.parent / "validation"
sys.path.insert(0, str(VALIDATION))
import allocator_fit

POINTS = tomllib.loads((VALIDATION / "allocator.toml").read_text())["oom"]
STACKS = {"megatron-lm", "nemo", "deepspeed", "hf-trainer", "accelerate", "torchtitan", "torchtune", "llm-foundry",
          "peft", "trl", "axolotl", "unsloth", "llama-factory", "pytorch", "other"}
REQUIRED = {"id", "url", "repository", "accessed", "stack", "gpu_name", "expandable_segments", "distributed",
            "capacity_gib", "free_gib", "in_use_gib", "allocated_gib", "tried_gib", "notes"}
EPS = 0.011  # the messages print two decimals


def _ru(p: dict) -> float:
    if "reserved_unallocated_gib" in p:
        return p["reserved_unallocated_gib"]
    return p["reserved_total_gib"] - p["allocated_gib"]


def test_at_least_60_points_from_10_repositories() -> None:
    assert len(POINTS) >= 60
    assert len({p["repository"] for p in POINTS}) >= 10


def test_ids_are_unique() -> None:
    ids = [p["id"] for p in POINTS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("p", POINTS, ids=lambda p: p["id"])
def test_point_has_the_required_fields(p: dict) -> None:
    # in_use_gib may be absent only where the message format lacks it (TOML has no null)
    missing = REQUIRED - set(p) - {"in_use_gib"}
    assert not missing
    assert ("reserved_unallocated_gib" in p) != ("reserved_total_gib" in p)
    assert p["stack"] in STACKS
    assert p["url"].startswith("https://github.com/") and p["repository"] in p["url"]
    assert p["accessed"] == datetime.date(2026, 12, 5)
    assert p["expandable_segments"] in (True, False, "unknown")
    assert p["distributed"] in (True, False, "unknown")
    assert p["notes"]


@pytest.mark.parametrize("p", POINTS, ids=lambda p: p["id"])
def test_derived_quantities_are_non_negative(p: dict) -> None:
    ru = _ru(p)
    assert p["allocated_gib"] > 0 and ru >= 0 and p["tried_gib"] > 0
    assert p["capacity_gib"] >= p["free_gib"] >= 0
    if "in_use_gib" in p:
        assert p["in_use_gib"] + EPS >= p["allocated_gib"] + ru
        assert p["capacity_gib"] + EPS >= p["in_use_gib"]
        assert p["capacity_gib"] - p["free_gib"] + EPS >= p["in_use_gib"]
    else:
        assert p["capacity_gib"] - p["free_gib"] + EPS >= p["allocated_gib"] + ru


def test_fit_script_runs_and_counts_every_point(capsys: pytest.CaptureFixture[str]) -> None:
    assert allocator_fit.main([]) == 0
    out = capsys.readouterr().out
    assert f"{len(POINTS)} OOM messages" in out
    overall = allocator_fit.summary_rows(allocator_fit.load())[0]
    assert overall[0] == "overall" and overall[1][0] == len(POINTS)
    # Non-PyTorch memory may round to a hair under zero (two printed decimals), never more
    assert all(p.non_pytorch is None or p.non_pytorch > -EPS for p in allocator_fit.load())
