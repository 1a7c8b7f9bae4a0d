"""The result of planning: ranked rows with their memory breakdown, the
inputs as resolved, the assumptions, and the status.

Every row is built by re-evaluating its knobs with the memory model, so the
breakdown shown is exactly the model's, whoever chose the knobs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from planner import __version__
from planner.architecture import param_counts
from planner.candidates import RANKING_DIGITS, capacity_bytes, evaluate
from planner.grid import KnobArrays
from planner.numerics import departures, serving_departures
from planner.pareto import FrontPoint
from planner.perf import (
    DECODE_BANDWIDTH_EFFICIENCY,
    PREFILL_FLOPS_EFFICIENCY,
    ServingThroughput,
    TrainingSpeed,
    serving_throughput,
    training_speed,
)
from planner.serving import GROUP, PREFILL_CHUNK_TOKENS
from planner.space import Space
from planner.specs import DEFAULT_MATMUL_EFFICIENCY, LOSS_CHUNKS, Accounting, Framework, Gpu, Knobs, Mode, Pins, Request
from planner.steptime import DP_OVERLAP, DP_OVERLAP_PREFETCH, NCCL_BUS_EFFICIENCY, RING_HOP_LATENCY_S, WIDTH_HALF_EFFICIENCY

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 1


class PlanStatus(StrEnum):
    OPTIMAL = "optimal"  # the first row is proved optimal
    FEASIBLE = "feasible"  # rows fit, optimality not proved within the time limit
    INFEASIBLE = "infeasible"  # proved: no configuration fits


@dataclass(frozen=True)
class PlanRow:
    rank: int  # 1-based; 0 for the reference-numerics row and the closest non-fitting configuration
    knobs: Knobs
    gpu: Gpu
    memory_bytes: dict[str, int]  # per GPU, by component; sums to total_bytes
    allocated_bytes: int  # peak held by tensors (torch.cuda.max_memory_allocated)
    reserved_bytes: int  # peak of the caching allocator (torch.cuda.max_memory_reserved)
    cpu_bytes: int  # host memory offload needs for this GPU
    total_bytes: int
    usable_bytes: int
    fits: bool
    usd_per_hour: float | None  # whole job: GPUs x on-demand price
    gradient_accumulation: int
    global_batch: int  # sequences per optimizer step
    departures: tuple[str, ...]
    proved_optimal: bool
    mode: Mode = Mode.PRETRAIN
    throughput: ServingThroughput | TrainingSpeed | None = None  # serving: prefill/decode tokens/s, $/Mtok; training: step time, MFU, run time and cost

    def to_dict(self) -> dict[str, Any]:
        k = self.knobs
        return {
            "rank": self.rank,
            "fits": self.fits,
            "gpu": k.gpu,
            "gpu_count": k.gpus,
            "precision": str(k.precision),
            "optimizer": str(k.optimizer),
            "recompute": str(k.recompute),
            "zero_stage": k.zero_stage,
            "tp": k.tp,
            "sp": k.sp,
            "pp": k.pp,
            "vpp": k.vpp,
            "cp": k.cp,
            "dp": k.dp,
            "micro_batch": k.micro_batch,
            "offload": str(k.offload),
            "ep": k.ep,
            "dp_shard": k.dp_shard,
            "weight_format": str(k.weight_format),
            "kv_format": str(k.kv_format),
            "gradient_accumulation": self.gradient_accumulation,
            "global_batch": self.global_batch,
            "memory_bytes": dict(self.memory_bytes),
            "allocated_bytes": self.allocated_bytes,
            "reserved_bytes": self.reserved_bytes,
            "cpu_bytes": self.cpu_bytes,
            "total_bytes": self.total_bytes,
            "usable_bytes": self.usable_bytes,
            "headroom_bytes": self.usable_bytes - self.total_bytes,
            "usd_per_hour": self.usd_per_hour,
            "price_source": _price_source(self.gpu),
            "departures": list(self.departures),
            "proved_optimal": self.proved_optimal,
            "throughput": None if self.throughput is None else self.throughput.to_dict(),
        }


def _price_source(gpu: Gpu) -> str | None:
    p = gpu.price
    return None if p is None else f"{p.provider}, {p.offer}, {p.date.isoformat()} ({p.source})"


@dataclass(frozen=True)
class Fix:
    """A change that makes an infeasible request fit, verified by solving it again."""

    change: str  # in words
    flags: str  # the same change as command-line options
    plan: PlanRow  # the best plan after the change

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.change, "flags": self.flags, "plan": self.plan.to_dict()}


@dataclass(frozen=True)
class Plan:
    status: PlanStatus
    request: Request
    rows: tuple[PlanRow, ...]
    reference: PlanRow | None  # when the best row departs from the reference numerics: the best row that does not
    closest: PlanRow | None  # when nothing fits: the configuration needing the least memory
    explanation: str | None  # when nothing fits: what binds and by how much
    assumptions: tuple[str, ...]
    solve_s: float
    fixes: tuple[Fix, ...] = ()  # when nothing fits: verified ways to make it fit
    reasons: tuple[str, ...] = ()  # on request (explain): why the winner wins
    maximized: tuple[str, int] | None = None  # with --maximize: the quantity and the largest value that fits
    front: tuple[FrontPoint, ...] = ()  # with a run: the cost/time Pareto front, fastest first
    fewest_gpus: tuple[int | None, int | None] | None = None  # fewest GPUs that fit: (reference numerics, any numerics)

    @property
    def best(self) -> PlanRow | None:
        return self.rows[0] if self.rows else None

    @property
    def fits(self) -> bool:
        return bool(self.rows)

    def to_dict(self) -> dict[str, Any]:
        req = self.request
        model = req.model
        return {
            "schema_version": SCHEMA_VERSION,
            "planner_version": __version__,
            "status": str(self.status),
            "objective": str(req.objective),
            "fewest_gpus": None if self.fewest_gpus is None else dict(zip(("reference", "any"), self.fewest_gpus, strict=True)),
            "request": {
                "model": {"id": model.id, "name": model.name, "params": param_counts(model).total},
                "inventory": [
                    {"gpu": s.gpu.id, "count": s.count, "usable_bytes": s.gpu.usable_memory_bytes} for s in req.inventory
                ],
                "seq_len": req.workload.seq_len,
                "global_batch": req.workload.global_batch,
                "accounting": str(req.workload.accounting),
                "attention": str(req.workload.attention),
                "loss": str(req.workload.loss),
                "framework": str(req.workload.framework),
                "mode": str(req.workload.mode),
                "lora_rank": req.workload.lora_rank if req.workload.mode.adapters else None,
                "lora_targets": str(req.workload.lora_targets) if req.workload.mode.adapters else None,
                "overhead_bytes": req.workload.margins.overhead_bytes,
                "fragmentation_pct": req.workload.margins.fragmentation_pct,
                "pins": {
                    f.name: None if (v := getattr(req.pins, f.name)) is None else [str(x) if isinstance(x, str) else x for x in v]
                    for f in fields(Pins)
                },
                "top": req.top,
                "diverse": None if req.diverse is None else [str(d) for d in req.diverse],
                "job": None if req.job is None else {
                    "tokens": req.job.tokens,
                    "tokens_source": req.job.tokens_source,
                    "budget_usd": req.job.budget_usd,
                    "deadline_s": req.job.deadline_s,
                },
            },
            "plans": [r.to_dict() for r in self.rows],
            "reference": None if self.reference is None else self.reference.to_dict(),
            "closest": None if self.closest is None else self.closest.to_dict(),
            "explanation": self.explanation,
            "fixes": [f.to_dict() for f in self.fixes],
            "maximized": None if self.maximized is None else {"quantity": self.maximized[0], "value": self.maximized[1]},
            "pareto": [p.to_dict() for p in self.front],
            "reasons": list(self.reasons),
            "assumptions": list(self.assumptions),
            "solve_s": round(self.solve_s, 4),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_frame(self) -> pd.DataFrame:
        """One row per plan (the closest non-fitting configuration when nothing fits)."""
        import pandas as pd

        rows = self.rows or ((self.closest,) if self.closest else ())
        records = []
        for r in rows:
            d = r.to_dict()
            memory = d.pop("memory_bytes")
            d["departures"] = "; ".join(d["departures"])
            speed = d.pop("throughput") or {}
            records.append({**d, **{f"{name}_bytes": v for name, v in memory.items()}, **speed})
        return pd.DataFrame.from_records(records)


def make_row(space: Space, k: KnobArrays, rank: int, proved_optimal: bool) -> PlanRow:
    """Evaluate one configuration (a one-row KnobArrays) with the memory model."""
    req = space.request
    mem = evaluate(space, k)
    stock = req.inventory[int(k.gpu[0])]
    knobs = k.knobs(0, space.gpu_ids)
    total = int(mem.total[0])
    usable = int(capacity_bytes(space, k)[0])
    gb = req.workload.global_batch
    per_step = knobs.micro_batch * knobs.dp
    accumulation = gb // per_step if gb is not None and gb % per_step == 0 else 1
    price = stock.gpu.price
    serving = req.workload.mode is Mode.INFER
    if serving:
        gone = serving_departures(stock.gpu, knobs.weight_format, knobs.kv_format)
        counts = param_counts(req.model)
        speed = serving_throughput(
            req.model, counts, stock.gpu, knobs, req.workload.seq_len, int(mem.weights[0]), int(mem.kv_cache[0])
        )
    else:
        gone = departures(stock.gpu, knobs.precision, knobs.optimizer, knobs.offload)
        speed = training_speed(req, k) if req.workload.accounting is Accounting.FULL else None
    return PlanRow(
        rank=rank,
        knobs=knobs,
        gpu=stock.gpu,
        memory_bytes={name: int(v[0]) for name, v in mem.components().items()},
        allocated_bytes=int(mem.allocated[0]),
        reserved_bytes=int(mem.reserved[0]),
        cpu_bytes=int(mem.cpu[0]),
        total_bytes=total,
        usable_bytes=usable,
        fits=total <= usable,
        usd_per_hour=None if price is None else round(knobs.gpus * price.usd_per_hour, 4),
        gradient_accumulation=accumulation,
        global_batch=per_step * accumulation,
        departures=gone,
        proved_optimal=proved_optimal,
        mode=req.workload.mode,
        throughput=speed,
    )


FRAMEWORK_ASSUMPTIONS = {
    "deepspeed": (
        "framework deepspeed: an HF/PyTorch eager model (fp32 RMSNorm copies, fp32 softmax, unfused activations, "
        "fp32 loss) under DeepSpeed ZeRO: 16-bit weights and gradients, fp32 master weights, optimizer states and "
        "gradient partitions (ZeRO-3: 18P/N + 4 x largest layer, as DeepSpeed's estimator), 5e8-element reduce buckets; "
        "whole-layer recomputation only; no PP, SP or CP"
    ),
    "fsdp": (
        "framework fsdp: the same eager model under PyTorch DDP/FSDP with autocast: fp32 parameters, gradients and "
        "optimizer moments, 16-bit compute copies; DDP gradient buckets as large as the gradients; FSDP gathers one "
        "block and prefetches the next; PP/SP/CP and op-level selective checkpointing as in torchtitan"
    ),
    "megatron": (
        "framework megatron: Megatron-LM with Transformer Engine fused kernels, 16-bit weights, an fp32 main-gradient "
        "buffer, the distributed optimizer as ZeRO-1 (6 + 12/DP bytes per parameter with AdamW); selective "
        "recomputation is Korthikanti's core-attention recompute"
    ),
    "megatron-deepspeed": (
        "framework megatron-deepspeed: Megatron's fused kernels and TP/PP/SP with DeepSpeed ZeRO holding the model "
        "states (as in BLOOM's training); ZeRO-2/3 only without pipeline stages"
    ),
}


MODE_ASSUMPTIONS = {
    Mode.LORA: (
        "LoRA: frozen base in the working precision (no gradients or optimizer states); adapters of rank {rank} on {targets} "
        "linear layers with fp32 weights, gradients and optimizer states under mixed precision (PEFT's "
        "autocast_adapter_dtype); activations counted as in full training (an upper bound: frozen layers keep less)"
    ),
    Mode.QLORA: (
        "QLoRA: base linear layers in 4-bit NF4 with double-quantized constants (0.516 B per weight), embeddings, head "
        "and norms in fp32 (PEFT's prepare_model_for_kbit_training), one 16-bit copy of the largest matrix while it is "
        "dequantized; FSDP/ZeRO-3 gather NF4 units; adapters of rank {rank} on {targets} layers as for LoRA; "
        "activations counted as in full training; --offload paged: bitsandbytes' paged optimizer"
    ),
}


def _serving_assumptions(request: Request) -> tuple[str, ...]:
    w = request.workload
    gib = w.margins.overhead_bytes / 2**30
    return (
        (f"serving {w.seq_len} tokens of context per sequence: weights (int8/int4 with fp16 scales per {GROUP} weights, "
         f"embeddings and head 16-bit), KV cache for every sequence at full context, a prefill workspace of up to "
         f"{PREFILL_CHUNK_TOKENS} tokens through one layer, fp32 sampler logits"),
        "one model replica per plan (replicas add throughput, not memory); TP within one node",
        (f"throughput from peak rates: prefill at {PREFILL_FLOPS_EFFICIENCY:.0%} of dense peak, decode streaming weights and "
         f"KV cache at {DECODE_BANDWIDTH_EFFICIENCY:.0%} of memory bandwidth (assumed efficiencies, not yet calibrated); "
         "$/Mtok at the decode rate"),
        (f"per-GPU margins: {gib:.2f} GiB outside the allocator + {w.margins.fragmentation_pct}% of the allocated peak "
         "for fragmentation"),
        "capacity: CUDA-visible memory (torch total_memory) of each GPU type, from the catalog",
    )


ZERO3_CAVEAT_GPUS = 128  # inventories this large get the DeepSpeed ZeRO-3 speed caveat


def _speed_assumption(request: Request) -> str:
    gpus = [s.gpu for s in request.inventory]
    fitted = [g for g in gpus if g.matmul_efficiency != DEFAULT_MATMUL_EFFICIENCY]
    rough = [g.id for g in gpus if g.matmul_efficiency == DEFAULT_MATMUL_EFFICIENCY]
    rates = "; ".join(f"{g.id} {g.matmul_efficiency:.2f}" + (f", fp8 {g.fp8_matmul_efficiency:.2f}" if g.fp8_matmul_efficiency else "")
                      for g in fitted)
    text = (f"speed: compute at the GPU type's matmul efficiency fitted to published runs ({rates or 'none in this inventory'}) "
            f"x h / (h + {WIDTH_HALF_EFFICIENCY}); TP, PP and EP traffic on the critical path, DP/ZeRO traffic beyond "
            f"{DP_OVERLAP:.0%} of the compute (FSDP: {DP_OVERLAP_PREFETCH:.0%}) exposed, links at {NCCL_BUS_EFFICIENCY:.0%} "
            f"(a DP ring across nodes on the NICs of its members in a node), {RING_HOP_LATENCY_S * 1e6:.0f} us per ring step "
            "across nodes for ZeRO-3/FSDP per-layer collectives; 1F1B bubble (PP - 1) / VPP micro-batches "
            "(bench/throughput_calibration.py)")
    zero3 = request.pins.zero_stage is None or 3 in request.pins.zero_stage
    many = request.procurement or max(s.count for s in request.inventory) >= ZERO3_CAVEAT_GPUS
    if request.workload.framework is Framework.DEEPSPEED and zero3 and many:
        text += ("; DeepSpeed ZeRO-3 across hundreds of GPUs ran 29-177% slower in published runs than this predicts "
                 "(Narayanan et al. 2021, Table 2): treat its times there as optimistic")
    if rough:
        text += f"; no published run calibrates {', '.join(rough)}: default {DEFAULT_MATMUL_EFFICIENCY:.2f}, treat their speed as rough"
    return text


def _run_assumptions(request: Request) -> tuple[str, ...]:
    job = request.job
    if job is None:
        return ()
    return (
        (f"run: {job.tokens:,} tokens ({job.tokens_source}) in steps of {request.workload.global_batch} sequences; "
         f"cost = GPUs x run time x on-demand price; times and costs that agree to {RANKING_DIGITS} significant digits tie"),
    )


def assumptions(request: Request) -> tuple[str, ...]:
    # catalog entries carry a published parameter count; a config.json or --params model does not: name its source
    shape = (f"model: {request.model.source}",) if not request.model.published_params else ()
    return shape + _assumptions(request)


def _assumptions(request: Request) -> tuple[str, ...]:
    w = request.workload
    if w.mode is Mode.INFER:
        if w.accounting is Accounting.SEED:
            return ("seed quick estimate: total = 1.2 x weights at the format's width (seed 001); no KV cache, workspace or margins",)
        return _serving_assumptions(request)
    if w.accounting is Accounting.SEED:
        return (
            ("seed accounting: weights + gradients + optimizer states (the ZeRO paper's 2 + 2 + 12 bytes per parameter "
             "with mixed-precision AdamW) + activations by the seeds' formula (Korthikanti et al. 2022, 16-bit "
             "activations, no sequence parallelism); no logits, buffers or overhead"),
        )
    gib = w.margins.overhead_bytes / 2**30
    gb = "free: each plan runs micro_batch x DP sequences per step" if w.global_batch is None else f"{w.global_batch} sequences"
    adapters = MODE_ASSUMPTIONS.get(w.mode)
    lead = () if adapters is None else (adapters.format(rank=w.lora_rank, targets=w.lora_targets),)
    return (
        *lead,
        FRAMEWORK_ASSUMPTIONS[str(w.framework)],
        f"attention kernel: {w.attention} ({'no s x s scores kept' if w.attention == 'flash' else 'softmax scores kept for backward'})",
        (f"loss: {w.loss} ("
         + ("the whole micro-batch's logits in fp32 at once" if w.loss == "full"
            else f"logits in the working dtype, fp32 for one of {LOSS_CHUNKS} chunks at a time") + ")"),
        ("peak at the start of backward on the fullest pipeline stage: model states, the activations of the "
         "micro-batches in flight (1F1B), logits on the last stage, sharding buffers"),
        "fused optimizer step (no temporaries the size of the parameters); TP stays within one node",
        (f"per-GPU margins: {gib:.2f} GiB outside the allocator (CUDA context, cuBLAS, NCCL) + "
         f"{w.margins.fragmentation_pct}% of the allocated peak for allocator fragmentation; the check is "
         "reserved + margins <= usable"),
        f"global batch: {gb}",
        "capacity: CUDA-visible memory (torch total_memory) of each GPU type, from the catalog",
        _speed_assumption(request),
        *_run_assumptions(request),
    )
