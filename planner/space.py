"""Knob domains for a request, pruned by the rules real frameworks impose, as a grid.

The grid holds every "small-knob" tuple (GPU type, precision, optimizer,
recompute, ZeRO stage, TP, PP, virtual stages, SP, CP, micro-batch,
offload); data parallelism is a range per tuple (`dp_lo`..`dp_hi`) further
restricted by the global batch. A pin no GPU type can honour (a TP degree
that does not divide the heads, pipeline stages under DeepSpeed) is an input
error, raised here with what to change.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from planner.errors import PlannerInputError
from planner.grid import IntArray, KnobArrays
from planner.numerics import reference_format, reference_kv_format
from planner.specs import (
    DP_SHARD_NODE,
    KV_FORMATS,
    OFFLOADS,
    OPTIMIZERS,
    PRECISIONS,
    RECOMPUTES,
    WEIGHT_FORMATS,
    ZERO_STAGES,
    AttentionKernel,
    Framework,
    Gpu,
    KvFormat,
    Mode,
    Model,
    Offload,
    Optimizer,
    Precision,
    Recompute,
    Request,
    WeightFormat,
)

DEFAULT_MICRO_BATCHES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_OPTIMIZERS: tuple[Optimizer, ...] = (Optimizer.ADAMW, Optimizer.ADAMW_8BIT)
MIXED_PRECISIONS: tuple[Precision, ...] = (Precision.BF16_MIXED, Precision.FP16_MIXED, Precision.FP8_MIXED)
DEFAULT_PIPELINE_STAGES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
CONTEXT_PARALLEL_DEGREES: tuple[int, ...] = (1, 2, 4, 8, 16)
MIN_TOKENS_PER_CP_RANK = 4096  # the default search splits only sequences longer than this
PIPELINE_FRAMEWORKS = (Framework.MEGATRON, Framework.MEGATRON_DEEPSPEED, Framework.FSDP)  # HF+DeepSpeed has no pipeline
ZERO_BY_FRAMEWORK = {
    Framework.DEEPSPEED: ZERO_STAGES,
    Framework.FSDP: ZERO_STAGES,
    Framework.MEGATRON: (0, 1),
    Framework.MEGATRON_DEEPSPEED: ZERO_STAGES,  # ZeRO-2/3 only without pipeline stages
}
# HF models under DeepSpeed recompute whole layers (gradient checkpointing) or nothing.
RECOMPUTE_BY_FRAMEWORK = {fw: tuple(Recompute) for fw in Framework} | {Framework.DEEPSPEED: (Recompute.NONE, Recompute.FULL)}
OFFLOAD_STAGES = {  # the ZeRO stages each framework can offload from
    (Framework.DEEPSPEED, Offload.OPTIMIZER): (1, 2, 3),
    (Framework.DEEPSPEED, Offload.PARAMS): (3,),
    (Framework.FSDP, Offload.PARAMS): (3,),
    (Framework.MEGATRON, Offload.OPTIMIZER): (0, 1),
    (Framework.MEGATRON_DEEPSPEED, Offload.OPTIMIZER): (1, 2, 3),
    (Framework.MEGATRON_DEEPSPEED, Offload.PARAMS): (3,),
}


def tp_candidates(model: Model, gpu: Gpu, count: int) -> tuple[int, ...]:
    """TP degrees that split heads, KV heads and the FFN evenly and stay inside one node."""
    widths = [model.num_heads, model.num_kv_heads, model.ffn_size]
    if model.moe is not None:
        widths.append(model.moe.expert_ffn_size)
    limit = min(gpu.gpus_per_node, count)
    return tuple(t for t in range(1, limit + 1) if all(w % t == 0 for w in widths))


CHUNK_PAIRS = 1 << 21  # (tuple, DP) pairs evaluated per numpy pass, to bound memory


@dataclass(frozen=True)
class Space:
    """All small-knob tuples of a request, each with its allowed DP range.

    `grid.dp` holds `dp_hi`. `dp_values` is the sorted set DP may take at all
    (pins); with a global batch, (micro_batch, dp) pairs must also divide it,
    see `allowed_dp`.
    """

    request: Request
    grid: KnobArrays
    dp_lo: IntArray
    dp_hi: IntArray
    dp_values: Sequence[int]  # a range when DP is free, the pinned values otherwise

    @property
    def gpu_ids(self) -> tuple[str, ...]:
        return tuple(s.gpu.id for s in self.request.inventory)

    def allowed_dp(self, micro_batch: int, multiple: int = 1) -> Sequence[int]:
        """DP degrees the pins, the global batch, expert parallelism and hybrid sharding
        (a multiple of `multiple`, `KnobArrays.dp_multiple`) allow."""
        gb = self.request.workload.global_batch
        values = self.dp_values
        if gb is not None:
            if gb % micro_batch:
                return ()
            per_rank = gb // micro_batch
            values = tuple(d for d in values if d <= per_rank and per_rank % d == 0)
        if multiple > 1:
            values = tuple(d for d in values if d % multiple == 0)
        return values

    def pairs(self, lower: IntArray) -> Iterator[tuple[IntArray, IntArray]]:
        """Chunks of (grid rows, DP) for every allowed DP from `lower[row]` to the row's dp_hi."""
        for rows, values in self.dp_groups():
            if not len(values) or not len(rows):
                continue
            step = max(1, CHUNK_PAIRS // len(values))
            for start in range(0, len(rows), step):
                r = np.repeat(rows[start : start + step], len(values))
                d = np.tile(values, len(rows[start : start + step]))
                ok = (d >= lower[r]) & (d <= self.dp_hi[r])
                yield r[ok], d[ok]

    def dp_groups(self) -> Iterator[tuple[IntArray, IntArray]]:
        """(grid rows, allowed DP values as an array) for each (micro-batch, DP multiple) group of rows."""
        multiple = self.grid.dp_multiple
        keys = np.stack([self.grid.micro_batch, multiple], axis=1)
        for m, e in np.unique(keys, axis=0):
            rows = np.flatnonzero((self.grid.micro_batch == m) & (multiple == e))
            yield rows, np.asarray(self.allowed_dp(int(m), int(e)), dtype=np.int64)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise PlannerInputError(message)


TRAINING_ONLY = ("precision", "optimizer", "recompute", "zero_stage", "vpp", "sp", "cp", "offload", "ep", "dp_shard")
SERVING_ONLY = ("weight_format", "kv_format")
FLAGS = {"zero_stage": "--zero", "weight_format": "--weight-format", "kv_format": "--kv-dtype", "micro_batch": "--micro-batch",
         "dp_shard": "--dp-shard"}


def _check_mode_pins(request: Request) -> None:
    pins, mode = request.pins, request.workload.mode
    wrong = SERVING_ONLY if mode is not Mode.INFER else TRAINING_ONLY
    for field in wrong:
        if getattr(pins, field) is not None:
            flag = FLAGS.get(field, f"--{field.replace('_', '-')}")
            other = "--mode infer" if field in SERVING_ONLY else "a training mode (pretrain, finetune, lora, qlora)"
            raise PlannerInputError(f"{flag} has no meaning with --mode {mode}; it applies to {other}")
    if mode is Mode.INFER:
        for flag, formats in (("--weight-format", pins.weight_format), ("--kv-dtype", pins.kv_format)):
            usable = [f for f in formats or () if any(serving_supports(s.gpu, f) for s in request.inventory)]
            _require(formats is None or bool(usable), f"{flag} {','.join(formats or ())} is not supported by "
                                                      f"{', '.join(s.gpu.id for s in request.inventory)}; pick another or a GPU with it")


def _check_pins(request: Request) -> None:
    """Raise for pins no GPU type in the inventory can honour."""
    _check_mode_pins(request)
    pins, model, inv, w = request.pins, request.model, request.inventory, request.workload
    fw = w.framework
    if pins.precision is not None:
        _require(
            any(s.gpu.supports(p) for p in pins.precision for s in inv),
            f"--precision {','.join(pins.precision)} is not supported by {', '.join(s.gpu.id for s in inv)}; pick one of "
            f"{', '.join(x for x in PRECISIONS if any(s.gpu.supports(x) for s in inv))}",
        )
    if pins.tp is not None:
        valid = sorted({t for s in inv for t in tp_candidates(model, s.gpu, s.count)})
        bad = [t for t in pins.tp if t not in valid]
        _require(
            not bad,
            f"--tp {bad[0] if bad else ''} is impossible for {model.id} on this inventory: TP must divide "
            f"{model.num_heads} heads, {model.num_kv_heads} KV heads and FFN {model.ffn_size}, and fit in one node "
            f"and the GPU count; valid: {', '.join(map(str, valid)) or 'none'}",
        )
    if pins.zero_stage is not None:
        bad = [z for z in pins.zero_stage if z not in ZERO_BY_FRAMEWORK[fw]]
        _require(not bad, f"--zero {bad[0] if bad else ''} is not available with --framework {fw}; "
                          f"use {', '.join(map(str, ZERO_BY_FRAMEWORK[fw]))} (Megatron shards the optimizer only, as ZeRO-1)")
    if pins.pp is not None and pins.pp != (1,):
        _require(fw in PIPELINE_FRAMEWORKS or w.mode is Mode.INFER, f"--pp needs --framework megatron, megatron-deepspeed or fsdp; {fw} plans run without pipeline stages")
        bad = [p for p in pins.pp if p > model.num_layers]
        _require(not bad, f"--pp {bad[0] if bad else ''} exceeds {model.id}'s {model.num_layers} layers")
    if pins.vpp is not None and pins.vpp != (1,):
        _require(fw is not Framework.DEEPSPEED, "--vpp (interleaved 1F1B) needs pipeline stages: --framework megatron, megatron-deepspeed or fsdp")
    if pins.recompute is not None:
        _require(any(r in RECOMPUTE_BY_FRAMEWORK[fw] for r in pins.recompute),
                 f"--recompute {','.join(pins.recompute)} is not available with --framework {fw} (HF models recompute "
                 "whole layers); use none or full, or --framework megatron/fsdp")
    if pins.sp is not None and True in pins.sp:
        _require(fw in PIPELINE_FRAMEWORKS, f"--sp needs --framework megatron, megatron-deepspeed or fsdp; {fw} has no sequence parallelism")
    if pins.cp is not None and pins.cp != (1,):
        _require(fw in (Framework.MEGATRON, Framework.FSDP), f"--cp needs --framework megatron or fsdp; {fw} has no context parallelism")
        _require(w.attention is AttentionKernel.FLASH, "--cp needs flash attention (ring attention); drop --attention eager")
        bad = [c for c in pins.cp if w.seq_len % c]
        _require(not bad, f"--cp {bad[0] if bad else ''} does not divide --seq-len {w.seq_len}")
    if pins.ep is not None and pins.ep != (1,):
        _require(model.moe is not None, f"--ep (expert parallelism) needs a mixture-of-experts model; {model.id} is dense")
        bad = [e for e in pins.ep if model.moe is not None and model.moe.num_experts % e]
        _require(not bad, f"--ep {bad[0] if bad else ''} does not divide {model.id}'s {model.moe.num_experts if model.moe else 0} experts")
    if pins.dp_shard is not None and pins.dp_shard != (0,):
        _require(fw is Framework.FSDP, f"--dp-shard (hybrid sharding, HSDP) needs --framework fsdp; {fw} shards over all of DP")
        _require(pins.zero_stage is None or any(z >= 2 for z in pins.zero_stage),
                 "--dp-shard (hybrid sharding) shards gradients or parameters: use --zero 2 or 3 (HYBRID_SHARD is ZeRO-3)")
        if pins.dp is not None:
            groups = [g for g in pins.dp_shard if g > 0]
            _require(not groups or any(d % g == 0 and d > g for d in pins.dp for g in groups),
                     f"--dp-shard {groups[0] if groups else ''} must divide --dp {pins.dp[0]} with at least two replicas; "
                     f"pick a divisor of DP below it")
    if pins.offload is not None:
        _require(w.mode.adapters or pins.offload != (Offload.PAGED,),
                 "--offload paged (bitsandbytes' paged optimizer) is modelled for --mode lora or qlora; for full training use --offload optimizer")
        usable = [o for o in pins.offload if o in (Offload.NONE, Offload.PAGED) or (fw, o) in OFFLOAD_STAGES]
        _require(bool(usable), f"--offload {','.join(pins.offload)} is not available with --framework {fw}; "
                               + ", ".join(f"{f} offloads {o}" for f, o in OFFLOAD_STAGES))
    gb = w.global_batch
    if gb is not None and pins.micro_batch is not None:
        bad = [m for m in pins.micro_batch if gb % m]
        _require(not bad, f"--micro-batch {bad[0] if bad else ''} does not divide --global-batch {gb}; pick a divisor of {gb}")
    if pins.dp is not None:
        smallest = min(pins.tp or (1,)) * min(pins.pp or (1,)) * min(pins.cp or (1,))
        most = max(s.count for s in inv)
        bad = [d for d in pins.dp if d * smallest > most]
        _require(not bad, f"--dp {bad[0] if bad else ''} needs {bad[0] * smallest if bad else ''} GPUs with the model-parallel pins but "
                          f"the inventory has at most {most} of one type; lower --dp or add GPUs")
        if gb is not None:
            mbs = pins.micro_batch or DEFAULT_MICRO_BATCHES
            _require(any(gb % (m * d) == 0 for m in mbs for d in pins.dp),
                     f"--global-batch {gb} is not divisible by micro-batch x DP for any allowed pair; "
                     f"choose DP and micro-batch whose product divides {gb}")
    seq = w.seq_len
    _require(not (model.learned_positions and seq > model.learned_positions),
             f"--seq-len {seq} exceeds {model.id}'s learned position table of {model.learned_positions}; use --seq-len <= {model.learned_positions}")


SERVING_PIPELINE_STAGES: tuple[int, ...] = (1, 2, 4, 8)
# What serving searches: the format the GPU computes natively, and fp8 where it has fp8 tensor cores;
# integer formats are weight-only (dequantized to 16 bits), so any GPU runs them.
SERVING_FORMATS: tuple[WeightFormat, ...] = (WeightFormat.BF16, WeightFormat.FP16, WeightFormat.FP8, WeightFormat.INT8, WeightFormat.INT4)


def serving_supports(gpu: Gpu, fmt: WeightFormat | KvFormat) -> bool:
    if fmt in (WeightFormat.BF16, KvFormat.BF16):
        return gpu.supports_bf16
    if fmt in (WeightFormat.FP8, KvFormat.FP8):
        return gpu.supports_fp8
    return True


def _serving_domains(request: Request, gpu: Gpu, count: int) -> dict[str, list[int]]:
    """Serving knobs: weight format, KV-cache format, TP and PP; the batch is pinned (or 1);
    training knobs take one neutral value each."""
    pins, model = request.pins, request.model
    ref = reference_format(gpu)
    formats = pins.weight_format or tuple(f for f in SERVING_FORMATS if f not in (WeightFormat.BF16, WeightFormat.FP16) or f is ref)
    kvs = pins.kv_format or (reference_kv_format(gpu), KvFormat.FP8)
    tps = [t for t in tp_candidates(model, gpu, count) if pins.tp is None or t in pins.tp]
    return {
        "precision": [PRECISIONS.index(Precision.BF16_MIXED if gpu.supports_bf16 else Precision.FP16_MIXED)],
        "optimizer": [OPTIMIZERS.index(Optimizer.ADAMW)],
        "recompute": [RECOMPUTES.index(Recompute.NONE)],
        "zero_stage": [0],
        "tp": tps,
        "pp": [p for p in (pins.pp or SERVING_PIPELINE_STAGES) if p <= model.num_layers],
        "vpp": [1],
        "sp": [0],
        "cp": [1],
        "micro_batch": list(pins.micro_batch or (1,)),
        "offload": [OFFLOADS.index(Offload.NONE)],
        "ep": [1],
        "dp_shard": [0],
        "weight_format": [WEIGHT_FORMATS.index(f) for f in formats if serving_supports(gpu, f)],
        "kv_format": [KV_FORMATS.index(f) for f in kvs if serving_supports(gpu, f)],
    }


def _domains(request: Request, gpu: Gpu, count: int) -> dict[str, list[int]]:
    """Each knob's candidate values on one GPU type, as the integers the grid stores."""
    if request.workload.mode is Mode.INFER:
        return _serving_domains(request, gpu, count)
    pins, model, w = request.pins, request.model, request.workload
    fw = w.framework
    precisions = pins.precision or MIXED_PRECISIONS
    tps = [t for t in tp_candidates(model, gpu, count) if pins.tp is None or t in pins.tp]
    pipeline = fw in PIPELINE_FRAMEWORKS
    pps = pins.pp or (DEFAULT_PIPELINE_STAGES if pipeline else (1,))
    cps = pins.cp or (
        tuple(c for c in CONTEXT_PARALLEL_DEGREES if c == 1 or (w.seq_len % c == 0 and w.seq_len // c >= MIN_TOKENS_PER_CP_RANK))
        if fw in (Framework.MEGATRON, Framework.FSDP) and w.attention is AttentionKernel.FLASH
        else (1,)
    )
    mbs = pins.micro_batch or DEFAULT_MICRO_BATCHES
    if w.global_batch is not None:
        mbs = tuple(m for m in mbs if w.global_batch % m == 0)
    return {
        "precision": [PRECISIONS.index(p) for p in precisions if gpu.supports(p)],
        "optimizer": [OPTIMIZERS.index(o) for o in (pins.optimizer or DEFAULT_OPTIMIZERS)],
        "recompute": [RECOMPUTES.index(r) for r in (pins.recompute or _default_recompute(fw, w.attention)) if r in RECOMPUTE_BY_FRAMEWORK[fw]],
        "zero_stage": [z for z in (pins.zero_stage or ZERO_BY_FRAMEWORK[fw]) if z in ZERO_BY_FRAMEWORK[fw]],
        "tp": list(tps),
        "pp": [p for p in pps if p <= model.num_layers],
        "vpp": list(pins.vpp or (1,)),
        "sp": [int(s) for s in (pins.sp or ((False, True) if pipeline else (False,)))],
        "cp": list(cps),
        "micro_batch": list(mbs),
        "offload": [OFFLOADS.index(o) for o in (pins.offload or (Offload.NONE,))],
        "ep": list(pins.ep or _expert_parallel_degrees(model, count)),
        "dp_shard": _dp_shard_groups(request, gpu, tps, cps),
        "weight_format": [WEIGHT_FORMATS.index(WeightFormat.BF16)],
        "kv_format": [KV_FORMATS.index(KvFormat.BF16)],
    }


def _default_recompute(fw: Framework, attention: AttentionKernel) -> tuple[Recompute, ...]:
    """Recomputation modes to search. Megatron's selective recompute only re-runs the attention core,
    which flash attention already recomputes: no memory saved, so it is left to pins."""
    modes = RECOMPUTE_BY_FRAMEWORK[fw]
    if fw.fused_kernels and attention is AttentionKernel.FLASH:
        return tuple(m for m in modes if m is not Recompute.SELECTIVE)
    return modes


def _dp_shard_groups(request: Request, gpu: Gpu, tps: Sequence[int], cps: Sequence[int]) -> list[int]:
    """HSDP shard-group sizes to search (FSDP only): 0 (shard over all of DP) and the
    DP ranks of one node for each TP x CP (torchtitan's mesh puts TP, then CP, then
    the DP shard innermost), or the pinned sizes; rows where the size does not
    match the row's TP x CP are dropped in `_valid`."""
    if request.workload.framework is not Framework.FSDP:
        return [0]
    pinned = request.pins.dp_shard or (0, DP_SHARD_NODE)
    node = sorted({gpu.gpus_per_node // (t * c) for t in tps for c in cps if gpu.gpus_per_node // (t * c) >= 2})
    return sorted({g for p in pinned for g in (node if p == DP_SHARD_NODE else [p])})


def _expert_parallel_degrees(model: Model, count: int) -> tuple[int, ...]:
    """EP degrees to search: powers of two dividing the routed experts, within the GPU count (1 for dense models)."""
    if model.moe is None:
        return (1,)
    return tuple(e for e in (1, 2, 4, 8, 16, 32, 64, 128, 256) if model.moe.num_experts % e == 0 and e <= count)


def _product(domains: dict[str, list[int]]) -> dict[str, IntArray]:
    grids = np.meshgrid(*[np.asarray(v, dtype=np.int64) for v in domains.values()], indexing="ij")
    return {name: g.ravel() for name, g in zip(domains, grids, strict=True)}


def _valid(request: Request, cols: dict[str, IntArray], count: int, gpus_per_node: int) -> IntArray:
    """Rows that a real framework can run: SP only with TP, interleaving only
    with whole virtual stages, ZeRO-2/3 not with DeepSpeed's pipeline, offload
    where supported, model parallelism within the GPU count, hybrid sharding
    (FSDP HSDP) with ZeRO-2/3 and at least two replicas."""
    model, fw = request.model, request.workload.framework
    ok = cols["tp"] * cols["pp"] * cols["cp"] * cols["ep"] <= count
    hybrid = cols["dp_shard"] > 0  # HSDP: ZeRO-2/3 only, at least two replicas within the count
    ok &= ~hybrid | ((cols["zero_stage"] >= 2) & (2 * cols["dp_shard"] * cols["tp"] * cols["pp"] * cols["cp"] <= count))
    explicit = [g for g in request.pins.dp_shard or () if g > 0]  # pinned sizes apply to every TP x CP
    node_group = gpus_per_node // (cols["tp"] * cols["cp"])  # 'node' means this row's own node group
    ok &= ~hybrid | np.isin(cols["dp_shard"], explicit) | (cols["dp_shard"] == node_group)
    ok &= (cols["sp"] == 0) | (cols["tp"] > 1)
    if request.pins.sp is None and fw in PIPELINE_FRAMEWORKS and request.workload.mode is not Mode.INFER:
        ok &= cols["sp"] == (cols["tp"] > 1)  # searched: sequence parallelism wherever there is TP (it only saves memory)
    layers = -(-model.num_layers // cols["pp"])
    ok &= (cols["vpp"] == 1) | ((cols["pp"] > 1) & (layers % cols["vpp"] == 0))
    if fw is Framework.MEGATRON_DEEPSPEED:  # DeepSpeed's pipeline engine runs with ZeRO-0/1 only
        ok &= (cols["pp"] == 1) | (cols["zero_stage"] <= 1)
    none = OFFLOADS.index(Offload.NONE)
    offload_ok = cols["offload"] == none
    if request.workload.mode.adapters:  # paged adapter optimizers are plain torch optimizers under any stage
        offload_ok |= cols["offload"] == OFFLOADS.index(Offload.PAGED)
    for (framework, offload), stages in OFFLOAD_STAGES.items():
        if framework is fw:
            offload_ok |= (cols["offload"] == OFFLOADS.index(offload)) & np.isin(cols["zero_stage"], stages)
    return ok & offload_ok


def build_space(request: Request) -> Space:
    """Enumerate the small-knob tuples of every GPU type and their DP ranges."""
    _check_pins(request)
    pins = request.pins
    max_count = max(s.count for s in request.inventory)
    dp_values: Sequence[int] = tuple(sorted(pins.dp)) if pins.dp is not None else range(1, max_count + 1)
    if request.workload.mode is Mode.INFER and pins.dp is None:
        dp_values = (1,)  # one model replica; more replicas add throughput, not memory
    parts: list[dict[str, IntArray]] = []
    for g, stock in enumerate(request.inventory):
        cols = _product(_domains(request, stock.gpu, stock.count))
        keep = _valid(request, cols, stock.count, stock.gpu.gpus_per_node)
        cols = {name: v[keep] for name, v in cols.items()}
        cols["gpu"] = np.full(len(cols["tp"]), g, dtype=np.int64)
        cols["dp"] = stock.count // (cols["tp"] * cols["pp"] * cols["cp"])
        parts.append(cols)
    names = list(parts[0])
    merged = {name: np.concatenate([p[name] for p in parts]) for name in names}
    grid = KnobArrays(**merged)
    # A ZeRO stage with a single shard still changes what a framework keeps (FSDP reshards after
    # forward, DeepSpeed keeps fp32 gradient partitions), so every stage is searched from DP 1.
    lo = np.maximum(np.full_like(grid.dp, dp_values[0]), np.maximum(grid.ep, 2 * grid.dp_shard))
    hi = np.minimum(grid.dp, dp_values[-1])
    if request.workload.framework is Framework.FSDP:
        grid, lo, hi = _split_single_process(grid, lo, hi)
    return Space(request=request, grid=grid.with_dp(hi), dp_lo=lo, dp_hi=hi, dp_values=dp_values)


def _split_single_process(grid: KnobArrays, lo: IntArray, hi: IntArray) -> tuple[KnobArrays, IntArray, IntArray]:
    """Under PyTorch DDP a single process needs no gradient buckets, so memory
    drops from DP 2 to DP 1. To keep memory monotone in DP within each row,
    rows whose DP range spans both get a DP = 1 twin and start at DP 2."""
    spans = (grid.zero_stage <= 1) & (grid.cp == 1) & (lo <= 1) & (hi >= 2)
    twins = np.flatnonzero(spans)
    merged = KnobArrays(**{f: np.concatenate([getattr(grid, f), getattr(grid, f)[twins]]) for f in grid.__dataclass_fields__})
    lo = np.concatenate([np.where(spans, 2, lo), np.ones(len(twins), dtype=np.int64)])
    hi = np.concatenate([hi, np.ones(len(twins), dtype=np.int64)])
    return merged, lo, hi


def allowed_pairs(space: Space, micro_batches: Sequence[int]) -> list[tuple[int, int]]:
    """(micro_batch, dp) pairs the global batch and DP pins allow (expert parallelism aside)."""
    return [(m, d) for m in sorted(set(micro_batches)) for d in space.allowed_dp(m)]
