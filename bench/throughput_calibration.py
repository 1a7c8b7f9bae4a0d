"""Calibrate the step-time model (planner.steptime) against published training
runs (validation/throughput.toml) and record the error per run.

For every run with a layout and a global batch, the published figure is turned
into training tokens per second per GPU (with the source's own FLOP counting
for TFLOP/s and MFU figures) and compared with the model's prediction. Per GPU
type, `matmul_efficiency` (16-bit runs) and `fp8_matmul_efficiency` (fp8 runs)
are fitted so that the median log error of that type's runs is zero; the
catalog (catalogs/gpus.toml) carries the fitted values with this file as their
source. Errors are reported in-sample and leave-one-out (each run predicted
with efficiencies fitted on the other runs of its GPU type and precision).

    python bench/throughput_calibration.py        # table, fitted values, bench/results/throughput_calibration.csv

Runs left out of the fit (reported only): figures quoted as "up to", FLOP
counting not stated, pipelines whose micro-batch or interleaving the source
does not give. Runs not compared: GPUs outside the catalog, day counts (they
need the number of tokens trained), no global batch.

The width constant of the efficiency (planner.steptime.WIDTH_HALF_EFFICIENCY)
and the ring latency per step of collectives spanning nodes
(RING_HOP_LATENCY_S) are chosen here too: `--width-search` and
`--latency-search` refit every GPU type for each candidate value and print
the median |log error| of each, in-sample and leave-one-out.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import tomllib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from results_csv import write_results

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "validation"))
from report import _custom_model

from planner import __version__, flops
from planner.catalog import load_catalog
from planner.grid import KnobArrays
from planner.specs import (
    Accounting,
    AttentionKernel,
    Framework,
    Gpu,
    Knobs,
    Margins,
    Model,
    Optimizer,
    Precision,
    Recompute,
    Workload,
)
from planner.steptime import mfu_peak_tflops, step_terms

RUNS = ROOT / "validation" / "throughput.toml"
RESULTS = Path(__file__).parent / "results" / "throughput_calibration.csv"
CATALOG = load_catalog()
FRAMEWORKS = {
    "megatron-lm": Framework.MEGATRON,
    "nemo": Framework.MEGATRON,
    "megatron-bridge": Framework.MEGATRON,
    "megatron-deepspeed": Framework.MEGATRON_DEEPSPEED,
    "gpt-neox": Framework.MEGATRON_DEEPSPEED,
    "deepspeed": Framework.DEEPSPEED,
    "torchtitan": Framework.FSDP,
    "llm-foundry": Framework.FSDP,
    "metaseq": Framework.FSDP,
    "meta-internal": Framework.FSDP,
}
FIT_BOUNDS = (0.05, 1.0)
# GPU types that share a chip and clocks are fitted together; the catalog gives each member the family's values.
FAMILIES = {"a100-40g": "a100-sxm", "a100-80g": "a100-sxm", "h100-80g": "h100-sxm", "h200": "h100-sxm", "gh200": "h100-sxm"}
WITHIN_PCT = 15.0


class Skip(Exception):
    """The run cannot be compared; the message says why."""


@dataclass(frozen=True)
class Run:
    id: str
    gpu: Gpu
    model: Model
    workload: Workload
    knobs: Knobs
    published_tokens_per_s_per_gpu: float
    fit: bool  # used to fit efficiencies (figures quoted as "up to" or with unknown FLOP counting are only reported)
    fp8: bool


def _model(run: Mapping[str, Any]) -> Model:
    if run["model"] != "custom":
        model = CATALOG.model(run["model"])
        return dataclasses.replace(model, vocab_size=run.get("vocab_size", model.vocab_size))
    return _custom_model({"id": run["id"], "source": run["source"], **run})


def _published_tokens_per_s(run: Mapping[str, Any], model: Model, gpu: Gpu, recompute: Recompute, precision: Precision) -> float:
    """The run's figure as training tokens per second per GPU."""
    metric, value, counting = run["metric"], float(run["value"]), run.get("flops_counting", "unknown")
    s, n = run["seq_len"], run["gpus"]
    if metric == "tokens_per_s_per_gpu":
        return value
    if metric == "tokens_per_s":
        return value / n
    if metric == "iteration_s":
        return run["global_batch"] * s / value / n
    if metric in ("tflops_per_gpu", "mfu", "hfu"):
        if counting in ("unknown", "n/a"):
            counting = "with recompute" if metric != "mfu" else "model (6N + attention)"
        if counting.startswith("with recompute") or metric == "hfu":
            per_token = flops.hardware_flops_per_token(model, s, recompute)
        elif counting.startswith("6N"):
            per_token = 6 * int(run.get("params", 0) or 0)
        else:
            per_token = flops.model_flops_per_token(model, s)
        achieved = value * 1e12 if metric == "tflops_per_gpu" else value / 100 * mfu_peak_tflops(gpu, precision) * 1e12
        return achieved / per_token
    raise Skip(f"metric {metric} needs the number of tokens trained")


def parse(run: Mapping[str, Any]) -> Run:
    if not run.get("gpu"):
        raise Skip(f"GPU {run.get('gpu_name', '?')} not in the catalog")
    if not run.get("global_batch"):
        raise Skip("no global batch")
    gpu = CATALOG.gpu(run["gpu"])
    model = _model(run)
    framework = FRAMEWORKS[run["framework"]]
    precision = Precision(run["precision"])
    recompute = Recompute(run.get("recompute") or "none")
    tp, pp, cp = run.get("tp", 1), run.get("pp", 1) or 1, run.get("cp", 1) or 1
    dp = run.get("dp") or run["gpus"] // (tp * pp * cp)
    workload = Workload(run["seq_len"], run["global_batch"], Accounting.FULL, AttentionKernel.FLASH, framework, Margins(0, 0))
    knobs = Knobs(
        gpu=gpu.id, precision=precision, optimizer=Optimizer.ADAMW, recompute=recompute, zero_stage=run.get("zero_stage", 0),
        tp=tp, dp=dp, micro_batch=run.get("micro_batch") or 1, pp=pp, vpp=run.get("vpp", 1) or 1, sp=bool(run.get("sp", False)),
        cp=cp, ep=run.get("ep", 1) or 1,
    )
    published = _published_tokens_per_s(run, model, gpu, recompute, precision)
    complete = "micro_batch" in run and (pp == 1 or "vpp" in run)  # the pipeline bubble depends on both
    fit = not run.get("upper_bound") and run.get("flops_counting") != "unknown" and complete
    return Run(run["id"], gpu, model, workload, knobs, published, fit, precision is Precision.FP8_MIXED)


def predicted_tokens_per_s(run: Run, efficiency: float, fp8_efficiency: float) -> float:
    gpu = dataclasses.replace(run.gpu, matmul_efficiency=efficiency, fp8_matmul_efficiency=fp8_efficiency)
    k = KnobArrays.from_knobs([dataclasses.replace(run.knobs, gpu=gpu.id)], [gpu.id])
    seconds = float(step_terms(run.model, run.workload, k, [gpu]).seconds(k.dp)[0])
    return run.workload.global_batch * run.workload.seq_len / seconds / run.knobs.gpus  # type: ignore[operator]


def _fit(runs: list[Run], fixed: float | None) -> float:
    """Efficiency making the median log error of `runs` zero (16-bit, or fp8 with the 16-bit one `fixed`)."""
    def median_log_error(e: float) -> float:
        eff, eff8 = (e, 0.0) if fixed is None else (fixed, e)
        return statistics.median(math.log(predicted_tokens_per_s(r, eff, eff8) / r.published_tokens_per_s_per_gpu) for r in runs)

    lo, hi = FIT_BOUNDS
    if median_log_error(hi) < 0:
        return hi
    for _ in range(60):  # predicted throughput grows with efficiency: bisect on the sign
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if median_log_error(mid) < 0 else (lo, mid)
    return round((lo + hi) / 2, 3)


def fit_all(runs: list[Run]) -> dict[str, tuple[float, float, int, int]]:
    """Per GPU family: (16-bit efficiency, fp8 efficiency or 0, 16-bit runs, fp8 runs)."""
    by_gpu: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        if r.fit:
            by_gpu[FAMILIES.get(r.gpu.id, r.gpu.id)].append(r)
    out = {}
    for gpu_id, group in by_gpu.items():
        sixteen = [r for r in group if not r.fp8]
        eight = [r for r in group if r.fp8]
        eff = _fit(sixteen, None) if sixteen else 0.0
        if not sixteen:  # fp8 only: fit one efficiency for both
            eff = _fit(eight, None)
        eff8 = _fit(eight, eff) if eight and sixteen else (eff if eight else 0.0)
        out[gpu_id] = (eff, eff8, len(sixteen), len(eight))
    return out


def _efficiencies(fitted: Mapping[str, tuple[float, float, int, int]], gpu: Gpu) -> tuple[float, float]:
    family = FAMILIES.get(gpu.id, gpu.id)
    if family in fitted:
        return fitted[family][0], fitted[family][1]
    return gpu.matmul_efficiency, gpu.fp8_matmul_efficiency


SEARCHES = {  # flag: (planner.steptime constant, candidate values)
    "--width-search": ("WIDTH_HALF_EFFICIENCY", (0, 256, 512, 768, 1024, 1536, 2048, 4096)),
    "--latency-search": ("RING_HOP_LATENCY_S", (0.0, 5e-6, 10e-6, 20e-6, 30e-6, 40e-6, 60e-6, 80e-6)),
}


def constant_search(runs: list[Run], name: str, values: tuple[float, ...]) -> list[tuple[float, float, float]]:
    """(value, in-sample median |log error|, leave-one-out median |log error|) of the fitted runs,
    every GPU type refitted for each candidate value of the step-time constant `name`."""
    from planner import steptime

    kept = getattr(steptime, name)
    out = []
    try:
        for value in values:
            setattr(steptime, name, value)
            fitted = fit_all(runs)
            fit_runs = [r for r in runs if r.fit]
            errors = [abs(math.log(predicted_tokens_per_s(r, *_efficiencies(fitted, r.gpu)) / r.published_tokens_per_s_per_gpu))
                      for r in fit_runs]
            loo = [abs(math.log(predicted_tokens_per_s(r, *_efficiencies(fit_all([o for o in runs if o.id != r.id]), r.gpu))
                                / r.published_tokens_per_s_per_gpu)) for r in fit_runs]
            out.append((value, statistics.median(errors), statistics.median(loo)))
    finally:
        setattr(steptime, name, kept)
    return out


def main(argv: list[str]) -> int:
    raw = tomllib.loads(RUNS.read_text())["run"]
    parsed: list[Run] = []
    skipped: list[tuple[str, str]] = []
    for run in raw:
        try:
            parsed.append(parse(run))
        except Skip as why:
            skipped.append((run["id"], str(why)))
    for flag, (name, values) in SEARCHES.items():
        if flag in argv:
            for value, err, loo in constant_search(parsed, name, values):
                print(f"{name} {value:g}: median |log error| {err:.4f} in-sample, {loo:.4f} leave-one-out")
            return 0
    fitted = fit_all(parsed)
    rows = []
    for r in parsed:
        eff, eff8 = _efficiencies(fitted, r.gpu)
        predicted = predicted_tokens_per_s(r, eff, eff8)
        family = FAMILIES.get(r.gpu.id, r.gpu.id)
        others = [o for o in parsed if o.fit and FAMILIES.get(o.gpu.id, o.gpu.id) == family and o.fp8 == r.fp8 and o.id != r.id]
        loo = None
        if r.fit and others:
            loo_fit = fit_all([o for o in parsed if o.id != r.id])
            loo_eff, loo_eff8 = _efficiencies(loo_fit, r.gpu)
            loo = 100 * (predicted_tokens_per_s(r, loo_eff, loo_eff8) / r.published_tokens_per_s_per_gpu - 1)
        mfu = flops.model_flops_per_token(r.model, r.workload.seq_len) * predicted / (mfu_peak_tflops(r.gpu, r.knobs.precision) * 1e12)
        rows.append({
            "id": r.id, "gpu": r.gpu.id, "precision": str(r.knobs.precision), "gpus": r.knobs.gpus, "fit": r.fit,
            "published_tokens_per_s_per_gpu": round(r.published_tokens_per_s_per_gpu, 1),
            "predicted_tokens_per_s_per_gpu": round(predicted, 1),
            "error_pct": round(100 * (predicted / r.published_tokens_per_s_per_gpu - 1), 1),
            "loo_error_pct": "" if loo is None else round(loo, 1), "predicted_mfu_pct": round(100 * mfu, 1),
        })
    write_results(RESULTS, [f"# planner {__version__}, {date.today().isoformat()}; fitted: "
                            + "; ".join(f"{g} matmul {e:.3f} fp8 {e8:.3f} ({n} + {n8} runs)"
                                        for g, (e, e8, n, n8) in sorted(fitted.items()))], rows)
    if "--quiet" not in argv:
        for row in rows:
            print(f"{row['id']:42} {row['gpu']:9} {row['precision']:10} {row['gpus']:>6} fit={row['fit']!s:5} "
                  f"published {row['published_tokens_per_s_per_gpu']:>9} predicted {row['predicted_tokens_per_s_per_gpu']:>9} "
                  f"error {row['error_pct']:>6}%  loo {row['loo_error_pct']!s:>6}%  mfu {row['predicted_mfu_pct']}%")
        for rid, why in skipped:
            print(f"{rid:42} skipped: {why}")
    print(summary(rows, fitted, len(skipped)))
    return 0


def summary(rows: list[dict[str, Any]], fitted: Mapping[str, tuple[float, float, int, int]], skipped: int) -> str:
    fit_rows = [r for r in rows if r["fit"]]
    within = sum(abs(r["error_pct"]) <= WITHIN_PCT for r in fit_rows)
    loo = [abs(r["loo_error_pct"]) for r in fit_rows if r["loo_error_pct"] != ""]
    lines = ["fitted per GPU type: " + "; ".join(f"{g}: {e:.3f} 16-bit, {e8:.3f} fp8 ({n} + {n8} runs)" for g, (e, e8, n, n8) in sorted(fitted.items())),
             (f"{len(rows)} runs compared ({skipped} skipped), {len(fit_rows)} fitted: {within} within {WITHIN_PCT:.0f}% in-sample, "
             f"median |error| {statistics.median(abs(r['error_pct']) for r in fit_rows):.1f}%; leave-one-out median |error| "
             f"{statistics.median(loo) if loo else float('nan'):.1f}% over {len(loo)} runs, {sum(x <= WITHIN_PCT for x in loo)} within {WITHIN_PCT:.0f}%")]
    return "\n".join(lines)


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main(sys.argv[1:]))
