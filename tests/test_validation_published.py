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
# Measured points under-predicted by more than 5% today, each with its reason. Anything new here is a
# regression; the target (none) is held by the expected failure below.
KNOWN_UNDER = {
    # BigScience's planning log; its ZeRO-0 run, the log says, ran on a different code branch
    "bloom-prequel-200b-tp8-pp10-dp2-fp16", "bloom-prequel-181b-zero0-mbs2", "bloom-prequel-181b-zero1-mbs2",
    # QLoRA's "4-bit base model 5,048 MB" for LLaMA-7B: composition not given in the paper
    "qlora-llama-7b-nf4-base-weights",
    # nvidia-smi on one GPU with a 2021-22 CUDA that loaded every kernel up front (the source states about
    # 1.3 GB for the context); the single-GPU overhead is fitted on recent out-of-memory reports (0.5 GiB)
    "hf-anatomy-bert-large-weights-loaded", "hf-perf-bert-large-bs1-ga4", "hf-perf-bert-large-bs4-adafactor",
    "hf-perf-bert-large-bs1-ga4-gc-fp16-adafactor", "hf-perf-bert-large-bs4-adam8bit",
    "hf-perf-bert-large-bs1-ga4-gc-fp16-adam8bit", "hf-perf-bert-large-bs4-fp16", "hf-anatomy-bert-large-bs4-fp32",
    # torchtitan fp8 + compile + TP8 + full recompute: something held under Float8 with TP is not modelled
    "titan-llama3.1-70b-fsdp32-tp8", "titan-llama3.1-405b-3d-1f1b",
}
# Published out-of-memory runs predicted to fit at the fitted margins: the 530B ZeRO-3 row of Narayanan
# et al. Table 2 (its recompute setting is assumed) and Megatron-Bridge PR #3107's Llama-3-70B SFT at VPP 5
# (73.8 GiB predicted of 79.2: the interleaved schedule's extra in-flight memory is under-counted).
KNOWN_OOM_MISSES = {"megatron21-t2-zero3-529_6b-m1-n560-mb4-oom", "mbridge-pr3107-llama3-70b-sft-h100-vpp5-oom"}


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


def test_no_new_published_out_of_memory_is_predicted_to_fit() -> None:
    assert set(TARGETS.oom_predicted_to_fit) <= KNOWN_OOM_MISSES
    assert TARGETS.bounds_respected[0] == TARGETS.bounds_respected[1]


@pytest.mark.xfail(reason="known misses: " + ", ".join(sorted(KNOWN_OOM_MISSES)), strict=True)
def test_no_published_out_of_memory_is_predicted_to_fit() -> None:
    """Issue 12's bar: no published OOM predicted to fit."""
    assert TARGETS.oom_predicted_to_fit == ()


def test_measured_peaks_no_new_under_predictions() -> None:
    assert set(TARGETS.measured_under_5pct) <= KNOWN_UNDER


@pytest.mark.xfail(reason="known under-predictions listed in KNOWN_UNDER", strict=True)
def test_measured_peaks_never_under_predicted_beyond_5_percent() -> None:
    """Issue 12's bar: no under-prediction worse than -5%."""
    assert TARGETS.measured_worst_under_pct >= -5.0


@pytest.mark.xfail(reason="median 5.9%: torchtune's LoRA/QLoRA peaks are over-predicted by 18-58%", strict=True)
def test_measured_peaks_within_5_percent_median() -> None:
    """Issue 12's bar: measured peaks within 5% median absolute error overall."""
    assert TARGETS.measured_median_abs_pct <= 5.0


@pytest.mark.xfail(reason="torchtune's profile: 57.6% (LoRA/QLoRA peaks, optimizer in backward not modelled)", strict=True)
def test_measured_peaks_within_8_percent_for_every_profile() -> None:
    assert all(m <= 8.0 for _, m in TARGETS.profile_median_abs_pct.values())


@pytest.mark.xfail(reason="9 of 92 runs that ran are rejected: DeepSeek-V3 (MoE states), Nemotron-340B, Llama-2-70B SFT "
                          "(NeMo), llm-foundry at 64k tokens and fp8, a DeepSpeed offload tutorial, a torchtitan A100 run",
                   strict=True)
def test_published_runs_that_ran_are_predicted_to_fit() -> None:
    """Issue 12's bar: false 'does not fit' at most 2% of published runs."""
    assert TARGETS.false_no_fit_pct <= 2.0


def test_false_no_fit_never_grows() -> None:
    """The level reached when the stack profiles and fitted margins landed (9 of 92); a regression guard."""
    assert len(TARGETS.fits_predicted_oom) <= 9


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
