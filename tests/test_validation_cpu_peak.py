"""Validation against real PyTorch: peak allocated tensor bytes of whole training steps of
Hugging Face Llama- and GPT-2-style models on the CPU (bench/gpu_peak.py --device cpu, results
committed in bench/results/cpu_peak.csv), against the planner's allocated prediction
(`planner.memory.breakdown(...).allocated`, fsdp profile, one process).

Reads only the CSV and the planner (no torch): the predictions are recomputed with the current
planner code, so the recorded ones cannot silently go stale, and the error bounds are checked on
the current predictions, so a model change in the unsafe direction fails here."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
from peak_specs import predict_row
from results_csv import read_rows

ROWS = read_rows(BENCH / "results" / "cpu_peak.csv")
KNOBS = {"precision": {"bf16-mixed", "bf16", "fp32"}, "optimizer": {"adamw", "sgd-momentum", "adafactor"},
         "recompute": {"none", "full"}, "attention": {"sdpa", "eager"}}

# The honest status as recorded. No row is under-predicted since the activation model counts autocast's
# fp32 residual stream (planner.activations.autocast_residual): before, activation-dominated bf16-mixed steps
# (llama-deep, gpt2-deep: 8 layers, 4 x 1024 tokens, vocabulary 2048) were under by up to -5.74%. Logit-dominated
# steps (llama-cpu, gpt2-cpu: 4 layers, vocabularies of 32000/50257) are over-predicted by 16-53%: the peak comes
# in the loss's backward, before any parameter gradient exists, where the planner adds every gradient (right under
# gradient accumulation, not in a single step), a 16-bit copy of the embedding (autocast never casts it) and the
# working-dtype logits (freed once the loss upcasts them). Full recomputation is over-predicted by 21-46% (the one
# rematerialized layer and the gradients are not alive at the loss-backward peak).
UNDER_PREDICTED: set[tuple[str, str, str, str]] = set()
WORST_UNDER_PCT = 0.0  # recorded: +0.26% (gpt2-deep fp32); was -5.74% before the autocast residual
MEDIAN_ABS_PCT = 27.2  # recorded: 27.14%
WORST_OVER_PCT = 53.0  # recorded: +52.72%


def _error_pct(row: dict[str, str]) -> float:
    predicted, _ = predict_row(row, 0)
    measured = int(row["measured_allocated_bytes"])
    return 100 * (predicted - measured) / measured


def _id(row: dict[str, str]) -> str:
    return "-".join(row[k] for k in ("arch", "precision", "optimizer", "recompute", "attention", "micro_batch", "seq_len"))


def test_measurements_cover_four_architectures_and_every_knob_both_ways() -> None:
    assert {r["arch"] for r in ROWS} == {"llama-cpu", "gpt2-cpu", "llama-deep", "gpt2-deep"}
    for arch in ("llama-cpu", "gpt2-cpu"):
        mine = [r for r in ROWS if r["arch"] == arch]
        for knob, values in KNOBS.items():
            assert {r[knob] for r in mine} == values, (arch, knob)
        assert len({(r["micro_batch"], r["seq_len"]) for r in mine}) >= 3
    for arch in ("llama-deep", "gpt2-deep"):
        mine = [r for r in ROWS if r["arch"] == arch]
        assert {r["precision"] for r in mine} == KNOBS["precision"]
        assert {r["recompute"] for r in mine} == KNOBS["recompute"]
        assert {r["attention"] for r in mine} == KNOBS["attention"]
    assert all(int(r["measured_allocated_bytes"]) > 0 for r in ROWS)


@pytest.mark.parametrize("row", ROWS, ids=_id)
def test_recorded_prediction_is_the_current_planners(row: dict[str, str]) -> None:
    """Fails when the planner's model moves: re-run bench/gpu_peak.py --device cpu (or refresh the column)."""
    predicted, _ = predict_row(row, 0)
    assert predicted == int(row["predicted_allocated_bytes"])


@pytest.mark.parametrize("row", [r for r in ROWS if r["tracked_allocated_bytes"]], ids=_id)
def test_profiler_peak_agrees_with_the_dispatch_mode_storage_tracker(row: dict[str, str]) -> None:
    """Two independent measurements of the same step: the profiler's memory timeline (every
    allocation) and live storages returned by operators under a TorchDispatchMode."""
    measured, tracked = int(row["measured_allocated_bytes"]), int(row["tracked_allocated_bytes"])
    assert abs(tracked - measured) <= 0.001 * measured


@pytest.mark.parametrize("row", ROWS, ids=_id)
def test_only_the_known_autocast_rows_are_under_predicted(row: dict[str, str]) -> None:
    """A row outside UNDER_PREDICTED going below its measurement is a regression in the unsafe direction."""
    known = (row["arch"], row["precision"], row["recompute"], row["attention"]) in UNDER_PREDICTED
    assert _error_pct(row) >= (WORST_UNDER_PCT if known else 0.0)


def test_current_planner_errors_stay_within_the_recorded_status() -> None:
    errors = [_error_pct(r) for r in ROWS]
    assert min(errors) >= WORST_UNDER_PCT  # the unsafe direction
    assert statistics.median(abs(e) for e in errors) <= MEDIAN_ABS_PCT
    assert max(errors) <= WORST_OVER_PCT
