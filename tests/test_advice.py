"""Explanations: when nothing fits, the binding constraint and verified fixes; when
something fits, why the winner wins."""

from __future__ import annotations

import json
import re
import shlex

import pytest

import planner
from planner.cli import main

IMPOSSIBLE = ["--model", "405b", "--gpus", "a100-40g:8"]


def test_impossible_405b_names_the_binding_constraint_and_two_verified_fixes(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*IMPOSSIBLE, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["status"] == "infeasible"
    assert "memory binds" in doc["explanation"] and "GiB over the 39.6 GiB usable" in doc["explanation"]
    assert len(doc["fixes"]) >= 2
    for fix in doc["fixes"]:
        assert fix["plan"]["fits"]
        # the printed flags, applied to the original command, give a plan that fits
        args = [a for a in IMPOSSIBLE if a not in ("--gpus", "a100-40g:8")] + shlex.split(fix["flags"])
        if "--gpus" not in fix["flags"]:
            args += ["--gpus", "a100-40g:8"]
        assert main([*args, "--json"]) == 0, fix
        assert json.loads(capsys.readouterr().out)["plans"][0]["total_bytes"] == fix["plan"]["total_bytes"]


def test_pins_that_bind_are_offered_back() -> None:
    result = planner.plan("13b", "a100-40g:8", zero="0", recompute="none", optimizer="adamw")
    assert result.status == "infeasible"
    changes = [f.change for f in result.fixes]
    assert any("--recompute none" in c for c in changes)
    assert not any("--zero 0" in c for c in changes)  # any ZeRO stage alone still leaves recompute none too big
    assert all(f.plan.fits for f in result.fixes)


def test_shorter_sequence_fix_is_the_longest_that_fits() -> None:
    result = planner.plan("8b", "rtx4090:1", optimizer="adamw-8bit")
    assert not result.fits
    shorter = [f for f in result.fixes if f.flags.startswith("--seq-len")]
    if shorter:  # when some sequence fits on one card, one token more must not
        seq = int(shorter[0].flags.split()[1])
        assert planner.plan("8b", "rtx4090:1", optimizer="adamw-8bit", seq_len=seq).fits
        assert not planner.plan("8b", "rtx4090:1", optimizer="adamw-8bit", seq_len=seq + 1).fits


def test_explain_says_why_the_winner_wins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", "13b", "--gpus", "a100-40g:8", "--explain", "--json", "--minimize", "gpus"]) == 0
    doc = json.loads(capsys.readouterr().out)
    n = doc["plans"][0]["gpu_count"]
    reasons = " | ".join(doc["reasons"])
    assert "GiB headroom" in reasons
    assert f"with at most {n - 1} GPUs of each type: nothing fits: memory binds" in reasons
    assert "#1 over #2: " in reasons


def test_explain_by_step_time_names_speed_and_the_fewest_gpus(capsys: pytest.CaptureFixture[str]) -> None:
    """The default ranking (fastest on the owned GPUs) says why #1 beats #2 in speed or headroom, and how few GPUs fit."""
    assert main(["--model", "13b", "--gpus", "a100-40g:8", "--explain", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    reasons = " | ".join(doc["reasons"])
    assert "fastest plan with the numerics searched; the fewest GPUs that fit: " in reasons
    assert re.search(r"#1 over #2: (#1 is faster|steps within 5%)", reasons)


def test_a_larger_gpu_that_cannot_honour_a_pin_is_skipped_not_an_error() -> None:
    """The V100-32G is larger than a 4090 but has no bf16: offering it must not turn
    a valid request into an input error (it did, naming a GPU the user never gave)."""
    result = planner.plan("llama3.1-8b", "rtx4090:1", precision="bf16")
    assert result.status == "infeasible"
    assert result.fixes and all(f.plan.fits for f in result.fixes)
    assert not any("v100" in f.flags for f in result.fixes)
