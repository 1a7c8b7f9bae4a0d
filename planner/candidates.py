"""The numpy pre-pass the solver stands on: for every small-knob tuple, the
fewest data-parallel ranks at which it fits in memory.

Per-GPU memory never grows with DP (ZeRO divides by it, nothing multiplies
by it), so "fits" is `dp >= fit_dp` and one binary search per tuple, run for
all tuples at once, finds `fit_dp` exactly with the memory model's own
integers. The solver then only needs linear constraints.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from planner.architecture import param_counts
from planner.grid import IntArray, KnobArrays
from planner.job import JobPieces, job_pieces, within_limits
from planner.memory import MemoryBreakdown, breakdown
from planner.numerics import REFERENCE_OPTIMIZER, reference_format, reference_kv_format, reference_precision
from planner.space import Space
from planner.specs import (
    KV_FORMATS,
    OFFLOADS,
    OPTIMIZERS,
    PRECISIONS,
    WEIGHT_FORMATS,
    Diversity,
    Mode,
    Objective,
    Offload,
    Optimizer,
    Precision,
    WeightFormat,
)
from planner.steptime import step_terms


@dataclass(frozen=True)
class Candidates:
    """Tuples of a space that can fit, with what the solver needs about each.

    `knobs.dp` is the tuple's best DP: the smallest allowed DP at which it fits.
    `rank` is a total order used to break ties in the objective (lower is
    better): reference numerics, then less recomputation, less ZeRO sharding,
    lower TP, larger micro-batch.
    """

    space: Space
    index: IntArray  # rows of space.grid
    knobs: KnobArrays
    fit_dp: IntArray
    dp_hi: IntArray
    rank: IntArray
    pieces: JobPieces | None = None  # with a job: time and cost coefficients per DP piece

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, mask: IntArray) -> Candidates:
        rows = np.flatnonzero(mask)
        return Candidates(
            space=self.space,
            index=self.index[rows],
            knobs=self.knobs.take(rows),
            fit_dp=self.fit_dp[rows],
            dp_hi=self.dp_hi[rows],
            rank=self.rank[rows],
            pieces=None if self.pieces is None else self.pieces.take(rows),
        )


def capacity_bytes(space: Space, k: KnobArrays) -> IntArray:
    usable = np.array([s.gpu.usable_memory_bytes for s in space.request.inventory], dtype=np.int64)
    return usable[k.gpu]


def evaluate(space: Space, k: KnobArrays) -> MemoryBreakdown:
    """The memory model on knob arrays of this space's request."""
    req = space.request
    return breakdown(req.model, param_counts(req.model), req.workload, k)


def fit_threshold(space: Space) -> IntArray:
    """Smallest allowed DP in [dp_lo, dp_hi] at which each tuple fits; dp_hi + 1 where none does.

    Bisects over each row's allowed DP values (`Space.dp_groups`): with a global batch, memory at
    a DP that does not divide it means nothing and need not follow the monotone trend."""
    fit = space.dp_hi + 1
    for group, values in space.dp_groups():
        if not len(values) or not len(group):
            continue
        lo = np.searchsorted(values, space.dp_lo[group], side="left")
        hi = np.searchsorted(values, space.dp_hi[group], side="right") - 1
        grid = space.grid.take(group)
        cap = capacity_bytes(space, grid)
        top = values[np.clip(hi, 0, len(values) - 1)]
        possible = (lo <= hi) & (evaluate(space, grid.with_dp(top)).total <= cap)
        hi = np.where(possible, hi, lo)
        while True:
            rows = np.flatnonzero(lo < hi)  # bisect only the rows still open
            if not len(rows):
                break
            mid = (lo[rows] + hi[rows]) // 2
            ok = evaluate(space, grid.take(rows).with_dp(values[mid])).total <= cap[rows]
            hi[rows] = np.where(ok, mid, hi[rows])
            lo[rows] = np.where(ok, lo[rows], mid + 1)
        fit[group] = np.where(possible, values[np.clip(lo, 0, len(values) - 1)], space.dp_hi[group] + 1)
    return fit


def _best_dp(space: Space, fit: IntArray) -> IntArray:
    """Smallest allowed DP >= fit (global batch, pins, EP), 0 where none is <= dp_hi."""
    best = np.zeros_like(fit)
    for rows, values in space.dp_groups():
        if not len(values):
            continue
        pos = np.searchsorted(values, fit[rows])
        cand = values[np.minimum(pos, len(values) - 1)]
        ok = (pos < len(values)) & (cand <= space.dp_hi[rows])
        best[rows] = np.where(ok, cand, 0)
    return best


def _order(preferred: tuple, order: tuple) -> IntArray:
    """rank[i] = position of order[i] in `preferred`."""
    return np.array([preferred.index(v) for v in order], dtype=np.int64)


def departure_count(space: Space, k: KnobArrays) -> IntArray:
    """How many of precision, optimizer and offload (serving: weight and cache format) differ from the reference."""
    inv = space.request.inventory
    if space.request.workload.mode is Mode.INFER:
        ref_w = np.array([WEIGHT_FORMATS.index(reference_format(s.gpu)) for s in inv], dtype=np.int64)
        ref_kv = np.array([KV_FORMATS.index(reference_kv_format(s.gpu)) for s in inv], dtype=np.int64)
        return (k.weight_format != ref_w[k.gpu]).astype(np.int64) + (k.kv_format != ref_kv[k.gpu])
    ref_prec = np.array([PRECISIONS.index(reference_precision(s.gpu)) for s in inv], dtype=np.int64)
    count = (k.precision != ref_prec[k.gpu]).astype(np.int64) + (k.optimizer != OPTIMIZERS.index(REFERENCE_OPTIMIZER))
    return count + (k.offload != OFFLOADS.index(Offload.NONE))


# Among equal departures, the numerics that are safer to train with come first.
PRECISION_PREFERENCE = _order(
    (Precision.BF16_MIXED, Precision.FP16_MIXED, Precision.FP8_MIXED, Precision.BF16, Precision.FP16, Precision.FP32), PRECISIONS
)
OPTIMIZER_PREFERENCE = _order(
    (Optimizer.ADAMW, Optimizer.ADAMW_8BIT, Optimizer.LION, Optimizer.ADAFACTOR, Optimizer.SGD_MOMENTUM, Optimizer.SGD), OPTIMIZERS
)
FORMAT_PREFERENCE = _order(
    (WeightFormat.BF16, WeightFormat.FP16, WeightFormat.FP8, WeightFormat.INT8, WeightFormat.LLM_INT8, WeightFormat.INT4,
     WeightFormat.NF4_DQ, WeightFormat.NF4, WeightFormat.FP4_DQ, WeightFormat.FP4, WeightFormat.FP32), WEIGHT_FORMATS
)


def tie_rank(space: Space, k: KnobArrays) -> IntArray:
    """Position of each row in the tie-break order (0 = preferred): reference
    numerics and no offload, less recomputation, lower ZeRO stage, less
    model parallelism (TP, then PP, then CP; SP with TP), no interleaving,
    larger micro-batch, safer precision and optimizer, less offload,
    sharding over all of DP before hybrid (HSDP), inventory order, fewer DP ranks. Ranking by step
    time, more headroom (`headroom_class`) comes right after the numerics. Serving prefers fewer pipeline stages to
    less TP (pipeline stages add latency per token; TP within a node is the
    usual serving layout). Every knob takes part, so the order is total."""
    model_parallel = (k.tp, k.pp) if space.request.workload.mode is Mode.INFER else (k.pp, k.tp)
    roomier = () if space.request.objective is not Objective.STEP_TIME else (-headroom_class(space, k),)
    keys = (
        k.dp,
        k.gpu,
        k.kv_format,
        FORMAT_PREFERENCE[k.weight_format],
        k.offload,
        OPTIMIZER_PREFERENCE[k.optimizer],
        PRECISION_PREFERENCE[k.precision],
        -k.micro_batch,
        k.vpp,
        k.dp_shard,
        k.ep,
        -k.sp,
        k.cp,
        *model_parallel,
        k.zero_stage,
        k.recompute,
        *roomier,
        departure_count(space, k),
    )
    order = np.lexsort(keys)  # last key is primary
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank


HEADROOM_STEP = Fraction(5, 100)  # headroom counts in steps of 5% of usable memory ...
HEADROOM_STEPS = 2  # ... up to 10%: beyond that, more is not worth a slower or more sharded plan


def headroom_class(space: Space, k: KnobArrays) -> IntArray:
    """Free memory per GPU in whole HEADROOM_STEPs of the usable memory, at most HEADROOM_STEPS."""
    cap = capacity_bytes(space, k)
    free = np.maximum(cap - evaluate(space, k).total, 0)
    return np.minimum(free * HEADROOM_STEP.denominator // (cap * HEADROOM_STEP.numerator), HEADROOM_STEPS)


def unasked_departures(space: Space, k: KnobArrays) -> IntArray:
    """Departures from the reference numerics in knobs the user left to the search: precision,
    optimizer, offload. A pinned or widened knob (--optimizer any) is the user asking for them."""
    pins, inv = space.request.pins, space.request.inventory
    ref_prec = np.array([PRECISIONS.index(reference_precision(s.gpu)) for s in inv], dtype=np.int64)
    count = np.zeros(len(k), dtype=np.int64)
    if pins.precision is None:
        count += k.precision != ref_prec[k.gpu]
    if pins.optimizer is None:
        count += k.optimizer != OPTIMIZERS.index(REFERENCE_OPTIMIZER)
    if pins.offload is None:
        count += k.offload != OFFLOADS.index(Offload.NONE)
    return count


STEP_UNITS_PER_S = 1_000_000  # without a run, step times rank in integer microseconds


def step_pieces(space: Space) -> JobPieces:
    """Seconds per step of every tuple as `JobPieces` in microseconds (no cost), from `planner.steptime`
    with the request's global batch (alpha + beta / DP on each piece)."""
    req, k = space.request, space.grid
    terms = step_terms(req.model, req.workload, k, [s.gpu for s in req.inventory])
    keep = terms.d_lo <= terms.d_hi
    zero = np.zeros_like(terms.d_lo)
    return JobPieces(
        lo=np.where(keep, terms.d_lo, terms.d_hi + 1),
        hi=terms.d_hi,
        time_a=np.where(keep, np.rint(terms.alpha * STEP_UNITS_PER_S), 0).astype(np.int64),
        time_b=np.where(keep, np.rint(terms.beta * STEP_UNITS_PER_S), 0).astype(np.int64),
        cost_c=zero,
        cost_d=zero,
        priced=np.zeros(len(k), dtype=bool),
    )


def run_pieces(space: Space) -> JobPieces | None:
    """Per tuple, the coefficients the ranking needs per DP: the run's time and cost when the request
    has a run, else the step time when ranking by it (with a global batch); None otherwise."""
    req = space.request
    if req.job is not None:
        return job_pieces(req, space.grid)
    if req.objective is Objective.STEP_TIME and req.workload.global_batch is not None:
        return step_pieces(space)
    return None


def find_candidates(space: Space, fit: IntArray | None = None, pieces: JobPieces | None = None) -> Candidates:
    """Tuples that fit, each at its best DP. `fit` and `pieces` (fit_threshold, run_pieces) may be
    passed in when the caller needs them too, so they are computed once."""
    fit = fit_threshold(space) if fit is None else fit
    pieces = run_pieces(space) if pieces is None else pieces
    best = _best_dp(space, fit) if pieces is None else _best_dp_for_job(space, fit, pieces)
    keep = np.flatnonzero(best > 0)
    knobs = space.grid.take(keep).with_dp(best[keep])
    return Candidates(
        space=space,
        index=keep,
        knobs=knobs,
        fit_dp=fit[keep],
        dp_hi=space.dp_hi[keep],
        rank=tie_rank(space, knobs),
        pieces=None if pieces is None else pieces.take(keep),
    )


RANKING_DIGITS = 3  # runs whose time or cost agree to 3 significant digits tie (the model is not more precise)
# Step times within 5% of the fastest tie: the speed model's median error on published runs is 5.8%
# (bench/throughput_calibration.py), so a smaller lead is not a prediction. Plans that depart from the
# reference numerics unasked rank after every plan that does not (DEPARTS_OFFSET added to their time).
SPEED_TOLERANCE = Fraction(5, 100)
DEPARTS_OFFSET = 2**50


def band_limit(space: Space, best: int) -> int:
    """The largest primary value that ties with `best`: within SPEED_TOLERANCE of its time when
    ranking by step time (never across the departure offset), `best` itself otherwise."""
    if space.request.objective is not Objective.STEP_TIME:
        return best
    return best + (best % DEPARTS_OFFSET) * SPEED_TOLERANCE.numerator // SPEED_TOLERANCE.denominator


def job_primary(space: Space, k: KnobArrays, seconds: IntArray, cents: IntArray) -> IntArray:
    """What a run is ranked by: GPUs, or its cents or seconds to RANKING_DIGITS significant digits;
    by step time: its seconds (microseconds per step without a run), after the reference numerics."""
    objective = space.request.objective
    if objective is Objective.STEP_TIME:
        return np.asarray(seconds, dtype=np.int64) + DEPARTS_OFFSET * (unasked_departures(space, k) > 0)
    if objective is Objective.TIME:
        return significant(seconds)
    if objective is Objective.COST:
        return significant(cents)
    return k.model_parallel * k.dp


def significant(values: IntArray, digits: int = RANKING_DIGITS) -> IntArray:
    """Non-negative integers rounded half up to `digits` significant digits."""
    v = np.maximum(np.asarray(values, dtype=np.int64), 0)
    exponent = np.maximum(np.floor(np.log10(np.maximum(v, 1))).astype(np.int64) - (digits - 1), 0)
    unit = np.power(10, exponent, dtype=np.int64)
    return (v + unit // 2) // unit * unit


def job_pairs(space: Space, fit: IntArray, pieces: JobPieces) -> Iterator[tuple[IntArray, IntArray, IntArray, IntArray]]:
    """Chunks of (grid rows, DP, seconds, cents) for every allowed DP that fits in memory, within the
    inventory and covered by a piece of the step-time model (deadline and budget not applied)."""
    for r, d in space.pairs(fit):
        seconds, cents, covered = pieces.take(r).values(d)
        yield r[covered], d[covered], seconds[covered], cents[covered]


def _best_dp_for_job(space: Space, fit: IntArray, pieces: JobPieces) -> IntArray:
    """Per tuple, the allowed DP >= its memory threshold that ranks best for the job or the step
    time (then the smallest), within the deadline and budget; 0 where none does."""
    job = space.request.job
    best = np.zeros_like(fit)
    best_primary = np.full(len(fit), np.iinfo(np.int64).max)
    for r, d, seconds, cents in job_pairs(space, fit, pieces):
        ok = within_limits(job, seconds, cents, pieces.priced[r]) if job is not None else np.ones(len(r), dtype=bool)
        r, d = r[ok], d[ok]
        primary = job_primary(space, space.grid.take(r).with_dp(d), seconds[ok], cents[ok])
        order = np.lexsort((d, primary, r))  # per row: best primary, then smallest DP
        r, d, primary = r[order], d[order], primary[order]
        first = np.ones(len(r), dtype=bool)
        first[1:] = r[1:] != r[:-1]
        r, d, primary = r[first], d[first], primary[first]
        better = primary < best_primary[r]
        best[r[better]] = d[better]
        best_primary[r[better]] = primary[better]
    return best


def _precision_class(space: Space, k: KnobArrays) -> IntArray:
    """Precision with fp16 merged into bf16 (mixed and pure) on GPU types where both run at the same
    peak: the memory model gives them the same bytes, so the choice changes neither memory nor speed."""
    same = np.array([s.gpu.supports_bf16 and s.gpu.bf16_tflops == s.gpu.fp16_tflops for s in space.request.inventory])[k.gpu]
    merged = {PRECISIONS.index(Precision.FP16_MIXED): PRECISIONS.index(Precision.BF16_MIXED),
              PRECISIONS.index(Precision.FP16): PRECISIONS.index(Precision.BF16)}
    out = k.precision.copy()
    for a, b in merged.items():
        out[same & (k.precision == a)] = b
    return out


CHOICE_COLUMNS = ("gpu", "dp", "tp", "pp", "vpp", "cp", "sp", "ep", "dp_shard", "zero_stage", "recompute", "optimizer",
                  "offload", "weight_format", "kv_format")


def row_groups(space: Space, k: KnobArrays, diverse: Sequence[Diversity] | None = None) -> IntArray:
    """Rows that count as one answer share a group id. With `diverse`, the combination of those knobs
    (the best plan per combination). Otherwise everything a user chooses between (GPU type and count,
    layout, sharding, recompute, numerics, offload): rows differing only in micro-batch, or in fp16
    against bf16 where that changes nothing (`_precision_class`), are one answer, the best of them shown."""
    if diverse:
        columns = [getattr(k, d.column) for d in diverse]
    else:
        columns = [getattr(k, c) for c in CHOICE_COLUMNS] + [_precision_class(space, k)]
    if not len(k):
        return np.zeros(0, dtype=np.int64)
    _, ids = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)
    return ids.reshape(-1).astype(np.int64)


def fewest_gpus(space: Space, fit: IntArray) -> tuple[int | None, int | None]:
    """The fewest GPUs at which any tuple fits (memory, global batch, pins): with the reference
    numerics, and with any numerics the space searches; None where nothing fits."""
    best = _best_dp(space, fit)
    ok = best > 0
    gpus = space.grid.model_parallel * best
    pure = ok & (departure_count(space, space.grid) == 0)
    return (int(gpus[pure].min()) if pure.any() else None, int(gpus[ok].min()) if ok.any() else None)
