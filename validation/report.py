"""The memory model against published figures (validation/published.toml).

For every data point it rebuilds the configuration the source describes,
evaluates the planner's memory model on it and compares the component the
source counts (model states, activations, peak allocated, peak reserved,
nvidia-smi used) or, for reports of a run fitting or running out of memory,
whether the model agrees. Prints per source and overall: median and max
absolute percent error, and the count and size of under-predictions (the
unsafe direction).

    python validation/report.py            # the table and the summary
    python validation/report.py --csv      # one row per point, machine-readable

Points may describe full training, LoRA/QLoRA fine-tuning (lora_rank,
base_precision = "nf4") or serving (mode = "infer": weights, KV cache per
token, or the whole GPU). Points the model does not cover are listed with
the reason (encoder-decoder models given by parameter count only, features
such as optimizer-in-backward).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import tomllib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.architecture import ParamCounts, param_counts
from planner.catalog import load_catalog
from planner.grid import KnobArrays
from planner.memory import MemoryBreakdown, breakdown
from planner.profiles import PROFILES
from planner.request import GIB_BYTES
from planner.specs import (
    Accounting,
    AttentionKernel,
    Gpu,
    Knobs,
    KvFormat,
    LoraTargets,
    LossKernel,
    Mode,
    Model,
    Norm,
    Offload,
    Optimizer,
    Precision,
    Recompute,
    WeightFormat,
    Workload,
)

POINTS = Path(__file__).with_name("published.toml")
UNITS = {"GB": 10**9, "GiB": 2**30, "MB": 10**6, "MiB": 2**20, "KiB": 2**10}
CATALOG = load_catalog()
ANALYTIC = {"paper-formula", "deepspeed-estimator", "vllm-paper"}  # sources that publish a formula's value, not a measurement

# Which training-stack profile (planner.profiles) runs each source's stack, and its attention kernel:
# stacks of 2020-2022 (Megatron before FlashAttention, HF BERT, HF Llama in 2023 releases) kept the
# softmax scores.
STACKS: dict[str, tuple[Accounting, str, AttentionKernel]] = {
    "paper-formula": (Accounting.SEED, "deepspeed", AttentionKernel.EAGER),
    "deepspeed-estimator": (Accounting.FULL, "deepspeed", AttentionKernel.EAGER),
    "deepspeed": (Accounting.FULL, "deepspeed", AttentionKernel.FLASH),
    "megatron-lm": (Accounting.FULL, "megatron", AttentionKernel.EAGER),
    "nemo": (Accounting.FULL, "nemo", AttentionKernel.FLASH),
    "megatron-bridge": (Accounting.FULL, "nemo", AttentionKernel.FLASH),
    "megatron-deepspeed": (Accounting.FULL, "megatron-deepspeed", AttentionKernel.EAGER),
    "pytorch": (Accounting.FULL, "fsdp", AttentionKernel.EAGER),
    "hf-trainer": (Accounting.FULL, "hf", AttentionKernel.EAGER),
    "accelerate": (Accounting.FULL, "hf", AttentionKernel.EAGER),
    "hf-trainer+fsdp": (Accounting.FULL, "hf", AttentionKernel.EAGER),
    "torchtune": (Accounting.FULL, "torchtune", AttentionKernel.FLASH),
    "torchtitan": (Accounting.FULL, "torchtitan", AttentionKernel.FLASH),
    "llm-foundry": (Accounting.FULL, "llm-foundry", AttentionKernel.FLASH),
    "llama-recipes": (Accounting.FULL, "fsdp", AttentionKernel.FLASH),
    "llama2-accessory": (Accounting.FULL, "fsdp", AttentionKernel.FLASH),
    "peft": (Accounting.FULL, "hf", AttentionKernel.EAGER),
    "trl": (Accounting.FULL, "hf", AttentionKernel.FLASH),
    "hf-transformers+peft+bitsandbytes": (Accounting.FULL, "hf", AttentionKernel.EAGER),
    "bitsandbytes": (Accounting.FULL, "hf", AttentionKernel.EAGER),
    "fsdp-qlora": (Accounting.FULL, "fsdp", AttentionKernel.FLASH),
    # serving: the training stack does not enter the serving memory model
    "vllm": (Accounting.FULL, "fsdp", AttentionKernel.FLASH),
    "vllm-paper": (Accounting.FULL, "fsdp", AttentionKernel.FLASH),
    "hf-transformers": (Accounting.FULL, "hf", AttentionKernel.EAGER),
}
DEFAULT_RECOMPUTE = {"torchtune": Recompute.FULL}  # torchtune recipes checkpoint activations by default


class Kind:
    """How a point is judged: an exact analytic figure, a measurement, an upper-bound or rough
    estimate, or a report that a configuration fits or runs out of memory."""

    ANALYTIC = "analytic"
    MEASURED = "measured"
    BOUND = "bound"
    APPROXIMATE = "approximate"
    VERDICT = "verdict"


@dataclass(frozen=True)
class Outcome:
    id: str
    source: str
    counts: str
    kind: str
    published_bytes: int | None
    predicted_bytes: int | None
    error_pct: float | None  # (predicted - published) / published, at the source's printed precision
    verdict: str  # "ok", "UNDER" (predicted below the figure), "over", "MISS" (oom/fits disagree), "skipped"
    note: str
    profile: str = ""  # the planner's training-stack profile that ran the point


class Skip(Exception):
    """The model does not cover this point yet; the message says why."""


def _source_name(point: Mapping[str, Any]) -> str:
    return point["source"].split(",")[0].split(";")[0].strip()


def _custom_model(point: Mapping[str, Any]) -> Model:
    """A decoder described by the point's fields, in the style of its source."""
    needed = ("hidden_size", "num_layers", "num_heads", "vocab_size")
    if not all(f in point for f in needed):
        raise Skip("architecture not given (parameter count only)")
    pid, h, heads = point["id"], point["hidden_size"], point["num_heads"]
    bloom, bert = pid.startswith("bloom"), "bert" in pid
    seq = point.get("seq_len", 2048)
    return Model(
        id=pid, name=pid, aliases=(), family="custom", hidden_size=h, num_layers=point["num_layers"], num_heads=heads,
        num_kv_heads=point.get("num_kv_heads", heads), head_dim=point.get("head_dim", h // heads),
        attention_width=heads * point.get("head_dim", h // heads),
        ffn_size=point.get("ffn_size", 4 * h), ffn_matrices=2, ffn_activation="gelu", vocab_size=point["vocab_size"],
        tied_embeddings=True, learned_positions=0 if bloom else (512 if bert else seq), norm=Norm.LAYERNORM,
        norms_per_layer=2, embedding_norm=bloom, qkv_bias=True, linear_bias=True, parallel_block=False,
        dropout=not bloom, default_seq_len=seq, max_seq_len=seq, moe=None, published_params=0, published_label="",
        source=point["source"],
    )


def _model(point: Mapping[str, Any]) -> tuple[Model | None, ParamCounts]:
    """The architecture, and the parameter counts: a model-states figure is computed from the
    parameter count its source states (the ZeRO paper's GPT-2 '1.5B'), not the exact one."""
    overrides = {f: point[f] for f in ("vocab_size",) if f in point}
    if point["model"] != "custom" and not (point["counts"] == "model_states" and "params" in point):
        model = dataclasses.replace(CATALOG.model(point["model"]), **overrides)
        return model, param_counts(model)
    if point["counts"] == "model_states":
        p = int(point["params"])
        largest = int(point.get("largest_layer_params", p // 100))
        counts = ParamCounts(
            total=p, tp_sharded=p, replicated=0, block_sharded=p // 100, block_replicated=0, embedding_sharded=0,
            embedding_replicated=0, head_sharded=0, final_norm=0, largest_tensor=largest, routed_experts=0,
            block_routed_experts=0, bnb_small=0, bnb_blocks=-(-p // 256), adafactor_state=0,
        )
        return None, counts
    model = _custom_model(point)
    return model, param_counts(model)


def _gpu(point: Mapping[str, Any]) -> Gpu:
    if point.get("gpu"):
        return CATALOG.gpu(point["gpu"])
    gib = point.get("gpu_memory_gib", 80)
    base = CATALOG.gpu("a100-80g")
    # a GPU outside the catalog: CUDA exposes ~98.9% of the label (A100-80GB: 79.15 of 80 GiB)
    return dataclasses.replace(base, id=f"gpu-{gib}gib", usable_memory_bytes=int(gib * 0.989 * GIB_BYTES))


def _mode(point: Mapping[str, Any]) -> Mode:
    if point.get("mode") == "infer":
        return Mode.INFER
    if point.get("base_precision") == "nf4":
        return Mode.QLORA
    return Mode.LORA if "lora_rank" in point else Mode.PRETRAIN


def _configuration(point: Mapping[str, Any], model: Model | None) -> tuple[Workload, Knobs]:
    accounting, profile_id, attention = STACKS[point["framework"]]
    profile = PROFILES[profile_id]
    compiled = bool(point.get("compile", False))
    mode = _mode(point)
    seq = point.get("seq_len", model.default_seq_len if model else 2048)
    mb = point.get("micro_batch", 1)
    dp = point.get("dp", point.get("gpus", 1) // max(1, point.get("tp", 1) * point.get("pp", 1) * point.get("cp", 1)))
    gb = point.get("global_batch") or (point["grad_accum"] * mb * dp if "grad_accum" in point else None)
    margins = profile.margins
    loss = LossKernel(point["loss"]) if "loss" in point else profile.loss
    # a base-weights figure counts no adapters: rank 0
    rank = 0 if point.get("component") == "base_weights" else point.get("lora_rank", 16)
    workload = Workload(seq, gb, accounting, attention, profile.layout, margins, mode=mode, lora_rank=rank,
                        lora_targets=LoraTargets(point.get("lora_targets", "all")), loss=loss, compile=compiled,
                        profile=profile.id)
    optimizer = point.get("optimizer", "adamw")
    knobs = Knobs(
        gpu="gpu",
        precision=Precision(point.get("precision", "bf16-mixed")),
        optimizer=Optimizer.SGD if optimizer == "none" else Optimizer(optimizer),
        recompute=Recompute(point.get("recompute", DEFAULT_RECOMPUTE.get(point["framework"], Recompute.NONE))),
        zero_stage=point.get("zero_stage", 0),
        tp=point.get("tp", 1),
        dp=dp,
        micro_batch=mb,
        pp=point.get("pp", 1),
        vpp=point.get("virtual_stages", 1),
        sp=point.get("sp", False),
        cp=point.get("cp", 1),
        ep=point.get("ep", 1),
        offload=Offload(point.get("offload", "none")),
        weight_format=WeightFormat(point.get("weight_format", "bf16")),
        kv_format=KvFormat(point.get("kv_dtype", "bf16")),
    )
    return workload, knobs


def _predicted(point: Mapping[str, Any], b: MemoryBreakdown) -> int:
    counts = point["counts"]
    if counts == "weights" or point.get("component") == "base_weights":
        return int(b.weights[0])
    if counts == "kv_cache":
        return int(b.kv_cache[0])
    if point.get("optimizer") == "none":  # weights loaded, no training state
        return int(b.weights[0] + (b.overhead[0] if counts == "nvidia_smi_used" else 0))  # nothing cached yet
    if counts == "model_states":
        if point.get("component") == "optimizer":
            return int(b.optimizer[0])
        # DeepSpeed's estimator counts ZeRO-3's gathered layer but not the ZeRO-1/2 reduce bucket
        buffers = b.zero_buffers[0] if point.get("zero_stage", 0) >= 3 or point["framework"] != "deepspeed-estimator" else 0
        return int(b.weights[0] + b.gradients[0] + b.optimizer[0] + buffers)
    if counts == "activations":
        return int(b.activations[0] + b.logits[0])
    if counts == "peak_allocated":
        return int(b.allocated[0])
    if counts == "peak_reserved":
        return int(b.reserved[0])
    if counts == "nvidia_smi_used":
        return int(b.device_used[0])
    return int(b.total[0])  # oom, fits: what the GPU must hold


def _kind(point: Mapping[str, Any]) -> str:
    if point["counts"] in ("oom", "fits"):
        return Kind.VERDICT
    if point.get("upper_bound"):
        return Kind.BOUND
    if point.get("approximate"):
        return Kind.APPROXIMATE
    return Kind.ANALYTIC if point["framework"] in ANALYTIC else Kind.MEASURED


def _error_pct(predicted: int, point: Mapping[str, Any]) -> float:
    """Percent error with the prediction rounded as the source prints its figure (1.875 GB shows as 1.9)."""
    value = point["value"]
    decimals = len(repr(value).split(".")[1]) if isinstance(value, float) else 0
    shown = round(predicted / UNITS[point["unit"]], decimals)
    return 100 * (shown - value) / value


def evaluate(point: Mapping[str, Any]) -> Outcome:
    kind = _kind(point)
    base = {"id": point["id"], "source": _source_name(point), "counts": point["counts"], "kind": kind,
            "profile": STACKS[point["framework"]][1] if point["framework"] in STACKS else ""}
    try:
        if point.get("features"):
            raise Skip(f"relies on {', '.join(point['features'])}, not modelled")
        if point["framework"] not in STACKS:
            raise Skip(f"framework {point['framework']} not mapped")
        if point["counts"] == "activations" and point["model"] == "custom" and "num_layers" not in point:
            raise Skip("architecture not given")
        if "saving" in point.get("notes", "") or "dealloc" in point["id"]:
            raise Skip("the figure is a saving, not a peak")
        model, counts = _model(point)
        workload, knobs = _configuration(point, model)
        k = KnobArrays.from_knobs([knobs], ["gpu"])
        b = breakdown(model or _placeholder(counts), counts, workload, k)
    except Skip as why:
        return Outcome(**base, published_bytes=None, predicted_bytes=None, error_pct=None, verdict="skipped", note=str(why))
    predicted = _predicted(point, b)
    if kind == Kind.VERDICT:
        fits = predicted <= _gpu(point).usable_memory_bytes
        agree = fits == (point["counts"] == "fits")
        note = f"predicted {predicted / GIB_BYTES:.1f} GiB of {_gpu(point).usable_memory_bytes / GIB_BYTES:.1f}"
        return Outcome(**base, published_bytes=None, predicted_bytes=predicted, error_pct=None,
                       verdict="ok" if agree else "MISS", note=note)
    published = round(point["value"] * UNITS[point["unit"]])
    error = _error_pct(predicted, point)
    if kind == Kind.BOUND:
        verdict = "ok" if error <= 0 else "over"
    else:
        verdict = "ok" if abs(error) <= 1 else ("UNDER" if error < 0 else "over")
    return Outcome(**base, published_bytes=published, predicted_bytes=predicted, error_pct=error, verdict=verdict, note="")


def _placeholder(counts: ParamCounts) -> Model:
    """Model states need only the counts; a stand-in architecture for the activation terms they do not use."""
    base = CATALOG.model("llama2-7b")
    return dataclasses.replace(base, num_layers=1)


def outcomes(path: Path = POINTS) -> list[Outcome]:
    with path.open("rb") as fh:
        points = tomllib.load(fh)["point"]
    return [evaluate(p) for p in points]


@dataclass(frozen=True)
class Summary:
    name: str
    compared: int
    median_abs_pct: float
    max_abs_pct: float
    under: int
    worst_under_pct: float
    verdicts_ok: int
    verdicts: int
    predicted_fit_but_oom: int


def summarize(name: str, rows: list[Outcome]) -> Summary:
    errors = [r.error_pct for r in rows if r.error_pct is not None]
    unders = [e for e in errors if e < 0]
    verdicts = [r for r in rows if r.counts in ("oom", "fits")]
    return Summary(
        name=name,
        compared=len(errors),
        median_abs_pct=statistics.median(abs(e) for e in errors) if errors else 0.0,
        max_abs_pct=max((abs(e) for e in errors), default=0.0),
        under=len(unders),
        worst_under_pct=min(unders, default=0.0),
        verdicts_ok=sum(r.verdict == "ok" for r in verdicts),
        verdicts=len(verdicts),
        predicted_fit_but_oom=sum(r.counts == "oom" and r.verdict == "MISS" for r in verdicts),
    )


def summaries(rows: list[Outcome]) -> list[Summary]:
    by_source: dict[str, list[Outcome]] = defaultdict(list)
    for r in rows:
        if r.verdict != "skipped":
            by_source[r.source].append(r)
    kept = [r for r in rows if r.verdict != "skipped"]
    out = [summarize(name, group) for name, group in sorted(by_source.items())]
    return [*out, summarize("ALL", kept)]


@dataclass(frozen=True)
class Targets:
    """The issue's bars, checked on the current model."""

    analytic_within_1pct: tuple[int, int]  # (within, of)
    bounds_respected: tuple[int, int]
    measured_median_abs_pct: float
    measured_worst_under_pct: float
    measured_under_5pct: tuple[str, ...]  # ids under-predicted by more than 5%
    oom_predicted_to_fit: tuple[str, ...]
    fits_predicted_oom: tuple[str, ...]  # conservative misses
    fits_judged: int  # published runs that ran, judged by a verdict
    profile_median_abs_pct: dict[str, tuple[int, float]]  # profile -> (measured points, median |error|)

    @property
    def false_no_fit_pct(self) -> float:
        return 100 * len(self.fits_predicted_oom) / max(1, self.fits_judged)


def targets(rows: list[Outcome]) -> Targets:
    analytic = [r for r in rows if r.kind == Kind.ANALYTIC and r.error_pct is not None]
    bounds = [r for r in rows if r.kind == Kind.BOUND and r.error_pct is not None]
    measured = [r for r in rows if r.kind == Kind.MEASURED and r.error_pct is not None]
    errors = [r.error_pct for r in measured if r.error_pct is not None]
    return Targets(
        analytic_within_1pct=(sum(abs(r.error_pct or 0) <= 1 for r in analytic), len(analytic)),
        bounds_respected=(sum((r.error_pct or 0) <= 0 for r in bounds), len(bounds)),
        measured_median_abs_pct=statistics.median(abs(e) for e in errors),
        measured_worst_under_pct=min(errors),
        measured_under_5pct=tuple(r.id for r in measured if (r.error_pct or 0) < -5),
        oom_predicted_to_fit=tuple(r.id for r in rows if r.counts == "oom" and r.verdict == "MISS"),
        fits_predicted_oom=tuple(r.id for r in rows if r.counts == "fits" and r.verdict == "MISS"),
        fits_judged=sum(r.counts == "fits" and r.verdict != "skipped" for r in rows),
        profile_median_abs_pct={
            p: (len(e), statistics.median(abs(x) for x in e))
            for p in sorted({r.profile for r in measured})
            if (e := [r.error_pct for r in measured if r.profile == p and r.error_pct is not None])
        },
    )


ROOT = Path(__file__).resolve().parent.parent
STEP_RESULTS = tuple(ROOT / "bench" / "results" / name for name in ("cpu_peak.csv", "dist_peak.csv", "gpu_peak.csv"))


def step_measurements() -> list[tuple[str, list[float]]]:
    """(file, errors in %) of our own PyTorch step measurements (bench/gpu_peak.py), predictions
    recomputed with the current planner; kept apart from the published points: single steps with
    no gradient accumulation, measured as peak allocated (no margins)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import dist_specs
    import peak_specs
    import results_csv

    out = []
    for path in STEP_RESULTS:
        if not path.exists():
            continue
        rows = results_csv.read_rows(path)
        measured = [r for r in rows if int(r["measured_allocated_bytes"]) > 0]
        predict = dist_specs.predict_row if path.name == "dist_peak.csv" else (lambda r: peak_specs.predict_row(r, 0)[0])
        errors = [100 * (predict(r) / int(r["measured_allocated_bytes"]) - 1) for r in measured]
        out.append((str(path.relative_to(ROOT)), errors))
    return out


def main(argv: list[str]) -> int:
    rows = outcomes()
    if "--csv" in argv:
        print("id,source,counts,kind,published_bytes,predicted_bytes,error_pct,verdict,note")
        for r in rows:
            err = "" if r.error_pct is None else f"{r.error_pct:.2f}"
            print(f'{r.id},"{r.source}",{r.counts},{r.kind},{r.published_bytes or ""},{r.predicted_bytes or ""},{err},{r.verdict},"{r.note}"')
        return 0
    for r in rows:
        err = "" if r.error_pct is None else f"{r.error_pct:+7.1f}%"
        pub = "" if r.published_bytes is None else f"{r.published_bytes / GIB_BYTES:8.2f}"
        pred = "" if r.predicted_bytes is None else f"{r.predicted_bytes / GIB_BYTES:8.2f}"
        print(f"{r.id:48} {r.counts:15} {r.kind:11} {pub:>8} {pred:>8} {err:>8}  {r.verdict:7} {r.note}")
    print()
    print(f"{'source':58} {'n':>3} {'median|e|':>9} {'max|e|':>8} {'under':>5} {'worst':>7} {'fit/oom ok':>10}")
    for s in summaries(rows):
        print(f"{s.name[:58]:58} {s.compared:3} {s.median_abs_pct:8.1f}% {s.max_abs_pct:7.1f}% {s.under:5} "
              f"{s.worst_under_pct:6.1f}% {s.verdicts_ok:4}/{s.verdicts:<5}")
    t = targets(rows)
    skipped = [r for r in rows if r.verdict == "skipped"]
    print(f"\n{len(rows)} points: {len(rows) - len(skipped)} evaluated, {len(skipped)} skipped "
          f"({'; '.join(sorted({r.note for r in skipped}))}); GiB columns: published, predicted")
    print(f"analytic figures within 1% (at the printed precision): {t.analytic_within_1pct[0]} of {t.analytic_within_1pct[1]}")
    print(f"upper-bound estimates not exceeded: {t.bounds_respected[0]} of {t.bounds_respected[1]}")
    print(f"measured peaks: median |error| {t.measured_median_abs_pct:.1f}% (target <= 5%), worst under-prediction "
          f"{t.measured_worst_under_pct:.1f}% (target >= -5%); under by more than 5%: {', '.join(t.measured_under_5pct) or 'none'}")
    print(f"published out-of-memory predicted to fit: {', '.join(t.oom_predicted_to_fit) or 'none'} (target: none); "
          f"published fits predicted not to (conservative): {', '.join(t.fits_predicted_oom) or 'none'}")
    print(f"false 'does not fit': {len(t.fits_predicted_oom)} of {t.fits_judged} published runs that ran "
          f"({t.false_no_fit_pct:.1f}%, target <= 2%)")
    print("measured peaks per profile (target <= 8% each): " + ", ".join(
        f"{p} {m:.1f}% (n={n})" for p, (n, m) in t.profile_median_abs_pct.items()))
    print("margins are fitted on validation/allocator.toml (out-of-memory reports), not on these points: every "
          "figure above is out of sample for them")
    for name, errors in step_measurements():
        print(f"our PyTorch step measurements ({name}, peak allocated, no gradient accumulation): {len(errors)} configurations, "
              f"median |error| {statistics.median(abs(e) for e in errors):.1f}%, worst under-prediction {min(errors):+.1f}%, "
              f"largest over-prediction {max(errors):+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
