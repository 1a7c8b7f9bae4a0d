"""Validation against real multi-process PyTorch: rank 0's peak allocated tensor bytes of training steps under
DDP, DDP + ZeroRedundancyOptimizer, FSDP2 SHARD_GRAD_OP / FULL_SHARD and HSDP (gloo, one CPU process per rank,
bench/dist_peak.py, results committed in bench/results/dist_peak.csv), against the planner's per-GPU allocated
prediction under the `fsdp` framework profile at ZeRO stages 0-3 (bench/dist_specs.py).

Reads only the CSV and the planner (no torch): the predictions are recomputed with the current planner code, so
the recorded ones cannot silently go stale, and the error bounds are checked on the current predictions, so a
model change in the unsafe direction fails here."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
from dist_specs import COMPONENTS, ZERO_STAGE, predicted_components
from results_csv import read_rows

ROWS = read_rows(BENCH / "results" / "dist_peak.csv")

# The honest status as recorded (llama-deep, 24.65 M parameters: 4P fp32 = 94.0 MiB; N = ranks sharding;
# analysis in bench/dist_peak.py's module docstring). FSDP2 peaks vary between runs; the CSV keeps the highest of
# 2 runs per configuration. Under-predicted (the unsafe direction), all FSDP:
# - SHARD_GRAD_OP fp32: -0.76% at N = 4 here, +1.9% at N = 2 here but -4.74% in an earlier run (EARLIER_PEAKS).
#   The planner keeps the fp32 parameters unsharded at stage 2 (weights 4P), where FSDP shards them (4P/N) and
#   keeps a separate unsharded copy (4P, fp32 without a mixed-precision policy) from the forward to the
#   backward, plus a unit's all-gather output in flight: hidden only by the sharded gradients and unit buffers it
#   counts at a forward peak where none is alive. Under bf16-mixed the same error is an over-prediction of
#   4P(1 - 1/N) (+37% at N = 2, +42% at N = 4).
# - FULL_SHARD with full recompute: -2.87%. The peak is late in the backward (layer 2 of 8): the root unit
#   (embedding + head, 4 MiB bf16) stays gathered until the backward ends, beside the current and prefetched
#   layers, and a unit's fp32 reduce-scatter input lives beside its bf16 gradients and the recomputed layer's
#   backward temporaries: more than zero_buffers' 2 units + 1 unit of gradients.
# Everything else is over-predicted: DDP/ZeRO-1 by the fp32 .grad (4P, None at the forward/loss peak with
# set_to_none); the buckets (4P), ZeroRedundancyOptimizer's halved states and the autocast copies are right.
# FULL_SHARD/HSDP without recompute: the sharded gradients (4P/N) are mostly not yet alive at the early-backward peak.
UNDER_PREDICTED: dict[tuple[str, ...], float] = {}  # row -> the most negative error allowed (none since the fix below)
# Both under-predictions above were fixed in planner/states.py `_fsdp` (SHARD_GRAD_OP shards the parameters and
# keeps an unsharded compute-dtype copy; FULL_SHARD keeps the root unit gathered and a second unit's fp32
# reduce-scatter buffer in flight): SHARD_GRAD_OP fp32 N = 4 -0.76% -> +8.7%, FULL_SHARD with recompute
# -2.87% -> +2.96%, the earlier run's SHARD_GRAD_OP fp32 N = 2 peak -4.75% -> +7.99%.
MEDIAN_ABS_PCT = 16.8  # recorded: 16.75%
WORST_OVER_PCT = 28.7  # recorded: +28.67% (FULL_SHARD bf16-mixed, N = 2)


def _key(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(row[k] for k in ("layout", "world_size", "dp_shard", "precision", "recompute", "micro_batch", "seq_len"))


def _id(row: dict[str, str]) -> str:
    return "-".join(_key(row))


def _error_pct(row: dict[str, str]) -> float:
    measured = int(row["measured_allocated_bytes"])
    return 100 * (predicted_components(row)["allocated"] - measured) / measured


def test_measurements_cover_every_layout_both_precisions_and_two_world_sizes() -> None:
    assert {r["layout"] for r in ROWS} == set(ZERO_STAGE)
    assert {r["world_size"] for r in ROWS} == {"2", "4"}
    assert any(int(r["dp_shard"]) > 0 for r in ROWS)  # HSDP
    for layout in ("ddp", "ddp-zero1", "fsdp-shard-grad-op", "fsdp-full-shard"):
        assert {r["precision"] for r in ROWS if r["layout"] == layout} == {"bf16-mixed", "fp32"}, layout
    assert {r["recompute"] for r in ROWS} == {"none", "full"}
    assert all(0 < int(r["measured_min_allocated_bytes"]) <= int(r["measured_allocated_bytes"]) for r in ROWS)
    assert all(int(r["repeats"]) >= 2 for r in ROWS)


@pytest.mark.parametrize("row", ROWS, ids=_id)
def test_recorded_prediction_is_the_current_planners(row: dict[str, str]) -> None:
    """Fails when the planner's model moves: re-run bench/dist_peak.py (the measurements take about 7 minutes)."""
    predicted = predicted_components(row)
    assert predicted["allocated"] == int(row["predicted_allocated_bytes"])
    for component in COMPONENTS:
        assert predicted[component] == int(row[f"predicted_{component}_bytes"]), component


@pytest.mark.parametrize("row", ROWS, ids=_id)
def test_profiler_readings_agree(row: dict[str, str]) -> None:
    """The memory timeline (categories) against the raw allocation events of the same steps: equal in 13 of 15
    rows; under FSDP2 they can differ by about a unit's buffer (10.75 MiB: the timeline's size map mis-sizes
    FSDP2's all-gather buffers, "Mismatch between allocation and free", and drops allocations it cannot tie to
    a tensor); and the tensors seen at the start are exactly those Python enumerates (local parameters and
    optimizer states; DDP's buckets are reallocated in step 2's forward)."""
    measured, raw = int(row["measured_allocated_bytes"]), int(row["raw_peak_bytes"])
    assert abs(measured - raw) <= (0 if row["layout"].startswith("ddp") else 11 * 2**20)
    assert abs(int(row["step_start_bytes"]) - int(row["python_state_bytes"])) <= 2**20
    categories = sum(int(v) for k, v in row.items() if k.startswith("at_peak_"))
    assert categories == measured


@pytest.mark.parametrize("row", ROWS, ids=_id)
def test_only_the_known_rows_are_under_predicted_and_no_further(row: dict[str, str]) -> None:
    """A row outside UNDER_PREDICTED going below its measurement, or a known one going further below, is a
    regression in the unsafe direction."""
    assert _error_pct(row) >= UNDER_PREDICTED.get(_key(row), 0.0)


def test_known_under_predictions_are_still_recorded() -> None:
    """When a planner fix lifts a known row above its measurement, drop it from UNDER_PREDICTED."""
    assert {_key(r) for r in ROWS} >= set(UNDER_PREDICTED)
    for row in ROWS:
        if _key(row) in UNDER_PREDICTED:
            assert _error_pct(row) < 0, f"{_id(row)} is no longer under-predicted: remove it from UNDER_PREDICTED"


# FSDP2's peak varies from run to run (thread timing decides whether the previous step's last reduce-scatter
# buffers are still alive in the next forward). A higher peak than the CSV's, seen in an earlier run of the same
# script (2026-11-23, one run per configuration), checked too:
EARLIER_PEAKS: dict[tuple[str, ...], tuple[int, float]] = {  # row -> (peak bytes, most negative error allowed)
    ("fsdp-shard-grad-op", "2", "0", "fp32", "none", "1", "512"): (475_547_068, 0.0),  # +7.99% (was -4.745%)
}


@pytest.mark.parametrize("key", sorted(EARLIER_PEAKS), ids="-".join)
def test_higher_peaks_seen_in_an_earlier_run_are_no_further_under(key: tuple[str, ...]) -> None:
    (row,) = [r for r in ROWS if _key(r) == key]
    peak, floor = EARLIER_PEAKS[key]
    assert int(row["measured_allocated_bytes"]) <= peak
    assert 100 * (predicted_components(row)["allocated"] - peak) / peak >= floor


def test_current_planner_errors_stay_within_the_recorded_status() -> None:
    errors = [_error_pct(r) for r in ROWS]
    assert statistics.median(abs(e) for e in errors) <= MEDIAN_ABS_PCT
    assert max(errors) <= WORST_OVER_PCT


@pytest.mark.parametrize("row", [r for r in ROWS if r["layout"].endswith("full-shard") or r["precision"] == "fp32"], ids=_id)
def test_states_alive_at_the_start_of_a_step_are_the_planners(row: dict[str, str]) -> None:
    """What is exact today: the tensors alive when a step starts (fp32 parameters, sharded by FSDP; AdamW
    states, sharded from ZeRO-1 on) against the planner's weights plus optimizer where its weights are only
    those (FULL_SHARD / HSDP; fp32 DDP). Under SHARD_GRAD_OP the planner keeps the fp32 parameters unsharded
    (the known error): its weights + optimizer exceed the start by 4P(1 - 1/N), checked as such."""
    p = predicted_components(row)
    start = int(row["step_start_bytes"])
    if row["layout"] == "fsdp-shard-grad-op":
        assert p["weights"] + p["optimizer"] > start * 1.1
    else:
        assert abs(p["weights"] + p["optimizer"] - start) <= 0.005 * start


@pytest.mark.parametrize("row", [r for r in ROWS if r["layout"].startswith("ddp")], ids=_id)
def test_ddp_gradient_buckets_are_the_size_of_the_fp32_gradients(row: dict[str, str]) -> None:
    """DDP's reducer buckets (gradient_as_bucket_view=False) are the profiler's uncategorized bytes at the peak:
    the planner's 4 B per parameter (half its DDP gradients, .grad being the other half)."""
    buckets = predicted_components(row)["gradients"] // 2
    assert abs(int(row["at_peak_unknown_bytes"]) - buckets) <= 0.005 * buckets
