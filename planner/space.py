"""Knob domains for a request, pruned by the rules real frameworks impose, as a grid.

The grid holds every "small-knob" tuple (GPU type, precision, optimizer,
recompute, ZeRO stage, TP, PP, virtual stages, SP, CP, micro-batch,
offload); data parallelism is a range per tuple (`dp_lo`..`dp_hi`) further
restricted by the global batch. Pins no GPU type can honour are refused first
(`planner.rules.check_pins`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from planner.batch import bubble_dp_cap
from planner.grid import IntArray, KnobArrays
from planner.numerics import reference_format, reference_kv_format
from planner.rules import (
    DEFAULT_MICRO_BATCHES,
    OFFLOAD_STAGES,
    PIPELINE_FRAMEWORKS,
    RECOMPUTE_BY_FRAMEWORK,
    ZERO_BY_FRAMEWORK,
    check_pins,
    serving_supports,
    tp_candidates,
)
from planner.specs import (
    DP_SHARD_NODE,
    KV_FORMATS,
    OFFLOADS,
    OPTIMIZERS,
    PRECISIONS,
    RECOMPUTES,
    WEIGHT_FORMATS,
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

DEFAULT_OPTIMIZERS: tuple[Optimizer, ...] = (Optimizer.ADAMW, Optimizer.ADAMW_8BIT)
MIXED_PRECISIONS: tuple[Precision, ...] = (Precision.BF16_MIXED, Precision.FP16_MIXED, Precision.FP8_MIXED)
DEFAULT_PIPELINE_STAGES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
CONTEXT_PARALLEL_DEGREES: tuple[int, ...] = (1, 2, 4, 8, 16)
MIN_TOKENS_PER_CP_RANK = 4096  # the default search splits only sequences longer than this
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


SERVING_PIPELINE_STAGES: tuple[int, ...] = (1, 2, 4, 8)
# What serving searches: the format the GPU computes natively, and fp8 where it has fp8 tensor cores;
# integer formats are weight-only (dequantized to 16 bits), so any GPU runs them.
SERVING_FORMATS: tuple[WeightFormat, ...] = (WeightFormat.BF16, WeightFormat.FP16, WeightFormat.FP8, WeightFormat.INT8, WeightFormat.INT4)


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
    check_pins(request)
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
    gb = request.workload.global_batch
    if gb is not None and request.workload.mode is not Mode.INFER and pins.pp is None:
        hi = np.minimum(hi, bubble_dp_cap(grid, gb))  # searched pipelines keep enough micro-batches per step
        keep = np.flatnonzero(hi >= lo)
        grid, lo, hi = grid.take(keep), lo[keep], hi[keep]
    grid, lo, hi = _split_single_process(grid, lo, hi, request.workload.framework is Framework.FSDP)
    return Space(request=request, grid=grid.with_dp(hi), dp_lo=lo, dp_hi=hi, dp_values=dp_values)


def _split_single_process(grid: KnobArrays, lo: IntArray, hi: IntArray, fsdp: bool) -> tuple[KnobArrays, IntArray, IntArray]:
    """Under PyTorch DDP a single process needs no gradient buckets, and a job on one GPU
    keeps no NCCL buffers (`memory._overhead_bytes`), so memory drops from DP 2 to DP 1.
    To keep memory monotone in DP within each row, rows whose DP range spans both get a
    DP = 1 twin and start at DP 2."""
    single = (grid.model_parallel == 1) | ((grid.zero_stage <= 1) & (grid.cp == 1) & fsdp)
    spans = single & (lo <= 1) & (hi >= 2)
    twins = np.flatnonzero(spans)
    merged = KnobArrays(**{f: np.concatenate([getattr(grid, f), getattr(grid, f)[twins]]) for f in grid.__dataclass_fields__})
    lo = np.concatenate([np.where(spans, 2, lo), np.ones(len(twins), dtype=np.int64)])
    hi = np.concatenate([hi, np.ones(len(twins), dtype=np.int64)])
    return merged, lo, hi


def allowed_pairs(space: Space, micro_batches: Sequence[int]) -> list[tuple[int, int]]:
    """(micro_batch, dp) pairs the global batch and DP pins allow (expert parallelism aside)."""
    return [(m, d) for m in sorted(set(micro_batches)) for d in space.allowed_dp(m)]
