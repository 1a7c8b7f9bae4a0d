"""The memory model against published figures (validation/published.toml, run by
validation/report.py): analytic sources reproduced within 1%, no published OOM predicted
to fit, and measured peaks held to the errors recorded when the set was built."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

VALIDATION = Path(__file__).resolve().parent.parent / "validation"
sys.path.insert(0, str(VALIDATION))
import report

ROWS = report.outcomes()
TARGETS = report.targets(ROWS)
# Measured points under-predicted by more than 5% when the set was built: BLOOM's planning log,
# whose ZeRO-0 run the log itself says ran on a different code branch; QLoRA's "4-bit base model
# 5,048 MB" for LLaMA-7B, whose composition the paper does not give (NF4 + double quantization +
# fp32 embeddings/head come to 4.4 GB). Anything new here is a regression.
KNOWN_UNDER = {"bloom-prequel-200b-tp8-pp10-dp2-fp16", "bloom-prequel-181b-zero0-mbs2", "qlora-llama-7b-nf4-base-weights"}


def test_the_set_has_at_least_40_sourced_points() -> None:
    import tomllib

    points = tomllib.loads((VALIDATION / "published.toml").read_text())["point"]
    assert len(points) >= 40
    for p in points:
        assert p["source"] and p["url"] and p["counts"] in {
            "model_states", "activations", "peak_allocated", "peak_reserved", "nvidia_smi_used", "oom", "fits", "weights", "kv_cache"}
    assert sum(r.verdict != "skipped" for r in ROWS) >= 40


@pytest.mark.parametrize("row", [r for r in ROWS if r.kind == report.Kind.ANALYTIC], ids=lambda r: r.id)
def test_analytic_sources_reproduced_within_1_percent(row: report.Outcome) -> None:
    """ZeRO paper (Fig. 1, Table 1), DeepSpeed's estimator and docs: at the source's printed precision."""
    assert row.error_pct is not None and abs(row.error_pct) <= 1.0


def test_no_published_out_of_memory_is_predicted_to_fit() -> None:
    assert TARGETS.oom_predicted_to_fit == ()
    assert TARGETS.bounds_respected[0] == TARGETS.bounds_respected[1]


def test_measured_peaks_stay_within_the_recorded_errors() -> None:
    assert set(TARGETS.measured_under_5pct) <= KNOWN_UNDER
    assert TARGETS.measured_worst_under_pct >= -21.0
    # 9.4% since FSDP keeps its root unit (embedding, head) gathered through backward and a second unit's
    # reduce-scatter buffer in flight, as FSDP2 measured on the CPU (bench/dist_peak.py): safe-side terms
    assert TARGETS.measured_median_abs_pct <= 9.5


def test_fine_tuning_and_serving_points_are_evaluated() -> None:
    """LoRA, QLoRA and serving figures are judged by the model, not skipped."""
    import tomllib

    points = {p["id"]: p for p in tomllib.loads((VALIDATION / "published.toml").read_text())["point"]}
    judged = [r for r in ROWS if r.verdict != "skipped"]
    qlora = [r for r in judged if points[r.id].get("base_precision") == "nf4"]
    lora = [r for r in judged if "lora_rank" in points[r.id] and points[r.id].get("base_precision") != "nf4"]
    serving = [r for r in judged if points[r.id].get("mode") == "infer"]
    assert len(qlora) >= 4 and len(lora) >= 2 and len(serving) >= 5
    assert all(r.verdict == "ok" for r in qlora if r.kind == report.Kind.VERDICT)
