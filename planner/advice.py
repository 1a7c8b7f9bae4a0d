"""What-if re-solves: verified fixes when nothing fits, reasons when something does.

Every fix is a changed request that was solved again and found to fit; the
plan it found is attached. Nothing here is a guess.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from planner import capacity
from planner.candidates import HEADROOM_STEP, HEADROOM_STEPS, RANKING_DIGITS, SPEED_TOLERANCE, significant
from planner.catalog import Catalog
from planner.engine import solve_request
from planner.errors import PlannerInputError
from planner.grid import KnobArrays
from planner.perf import TrainingSpeed
from planner.plan import Fix, Plan, PlanRow
from planner.specs import DP_SHARD_WORDS, RECOMPUTES, Gpu, GpuStock, Mode, Objective, Offload, Optimizer, Pins, Precision, Request
from planner.steptime import step_terms
from planner.units import format_duration

GIB = 2**30
MORE_GPUS_CAP = 100_000  # the largest fleet a "more GPUs" fix considers per type
VERIFY_TIME_LIMIT_S = 5.0

# Pins a user may have set that, once searched again, can save memory; in the order tried.
RELAXABLE = (
    ("zero_stage", "--zero"),
    ("recompute", "--recompute"),
    ("micro_batch", "--micro-batch"),
    ("tp", "--tp"),
    ("sp", "--sp"),
    ("pp", "--pp"),
    ("cp", "--cp"),
    ("dp_shard", "--dp-shard"),
    ("vpp", "--vpp"),
    ("dp", "--dp"),
    ("optimizer", "--optimizer"),
    ("precision", "--precision"),
    ("weight_format", "--weight-format"),
    ("kv_format", "--kv-dtype"),
)


def _verify(request: Request) -> Plan | None:
    """The changed request's plan if it fits; None if it does not, or if its pins
    cannot apply to it (a pinned --precision bf16 on a V100 offered as a larger GPU)."""
    quick = dataclasses.replace(request, top=1, diverse=None, time_limit_s=VERIFY_TIME_LIMIT_S)
    try:
        result = solve_request(quick)
    except PlannerInputError:
        return None
    return result if result.fits else None


def _pin_text(values: tuple[object, ...], field: str = "") -> str:
    if field == "dp_shard":  # 0 and DP_SHARD_NODE stand for the words the flag takes
        words = {value: word for word, value in DP_SHARD_WORDS.items()}
        return ",".join(words.get(v, str(v)) for v in values)  # type: ignore[call-overload]
    return ",".join(str(v) for v in values)


def _relaxed_pins(request: Request) -> Iterator[tuple[str, str, Request]]:
    for field, flag in RELAXABLE:
        pinned = getattr(request.pins, field)
        if pinned is None or (field == "micro_batch" and request.workload.mode is Mode.INFER):
            continue
        relaxed = dataclasses.replace(request, pins=dataclasses.replace(request.pins, **{field: None}))
        yield f"stop pinning {flag} {_pin_text(pinned, field)} (search it)", f"drop {flag}", relaxed


def _smaller_batch(request: Request) -> Iterator[tuple[str, str, Request]]:
    """Serving: the most concurrent sequences that fit."""
    if request.workload.mode is not Mode.INFER or request.pins.micro_batch is None:
        return
    most = capacity.largest(request, capacity.Quantity.BATCH)
    if most >= 1:
        smaller = dataclasses.replace(request, pins=dataclasses.replace(request.pins, micro_batch=(most,)))
        yield f"serve {most} concurrent sequences (from {request.pins.micro_batch[0]}; the most that fit)", f"--batch {most}", smaller


def _shorter_sequence(request: Request) -> Iterator[tuple[str, str, Request]]:
    seq = request.workload.seq_len
    lo = capacity.largest(request, capacity.Quantity.CONTEXT)  # below seq: seq itself does not fit
    if 1 <= lo < seq:
        shorter = dataclasses.replace(request, workload=dataclasses.replace(request.workload, seq_len=lo))
        what, flag = ("the context", "--context") if request.workload.mode is Mode.INFER else ("sequences", "--seq-len")
        yield f"shorten {what} to {lo} tokens (from {seq}; the longest that fits)", f"{flag} {lo}", shorter


def _fewest(request: Request, gpu: Gpu) -> Request | None:
    """The request on the fewest GPUs of `gpu` that fit (up to MORE_GPUS_CAP), or None."""
    big = dataclasses.replace(request, inventory=(GpuStock(gpu, MORE_GPUS_CAP),), objective=Objective.GPUS)
    found = _verify(big)
    if found is None or found.best is None:
        return None
    return dataclasses.replace(request, inventory=(GpuStock(gpu, found.best.knobs.gpus),))


def _more_gpus(request: Request) -> Iterator[tuple[str, str, Request]]:
    for stock in request.inventory:
        more = _fewest(request, stock.gpu)
        if more is not None:
            n = more.inventory[0].count
            yield f"use {n}x {stock.gpu.id} (the inventory has {stock.count})", f"--gpus {stock.gpu.id}:{n}", more


def _larger_gpus(request: Request, catalog: Catalog) -> Iterator[tuple[str, str, Request]]:
    """Catalog GPUs with more memory: the one needing the fewest GPUs, and the cheapest per hour if another."""
    largest = max(s.gpu.usable_memory_bytes for s in request.inventory)
    options = []
    for gpu in (g for g in catalog.gpus if g.usable_memory_bytes > largest):
        changed = _fewest(request, gpu)
        if changed is not None:
            n = changed.inventory[0].count
            usd = n * gpu.price.usd_per_hour if gpu.price else float("inf")
            options.append((n, usd, gpu.id, changed))
    picks = []
    if options:
        picks.append(min(options, key=lambda o: (o[0], o[1], o[2])))
        cheapest = min(options, key=lambda o: (o[1], o[0], o[2]))
        if cheapest is not picks[0] and cheapest[1] < float("inf"):
            picks.append(cheapest)
    for n, usd, gpu_id, changed in picks:
        price = f", ${usd:.2f}/h" if usd < float("inf") else ""
        yield f"use {n}x {gpu_id} instead ({changed.inventory[0].gpu.usable_memory_bytes / GIB:.0f} GiB usable{price})", f"--gpus {gpu_id}:{n}", changed


def _more_gpus_and_shorter_sequence(request: Request) -> Iterator[tuple[str, str, Request]]:
    """When no count of the inventory's GPUs fits, a power-of-two sequence length that does, on the fewest of them."""
    for stock in request.inventory:
        if _fewest(request, stock.gpu) is not None:
            continue
        many = dataclasses.replace(request, inventory=(GpuStock(stock.gpu, MORE_GPUS_CAP),))
        for _, _, longest in _shorter_sequence(many):
            # a power of two below the margin, so the fleet is not sized to the last token
            seq = 1 << (longest.workload.seq_len.bit_length() - 1)
            shorter = dataclasses.replace(longest, workload=dataclasses.replace(longest.workload, seq_len=seq))
            fewest = _fewest(shorter, stock.gpu)
            if fewest is not None and fewest.inventory[0].count > stock.count:  # else a shorter sequence alone does it
                n, seq = fewest.inventory[0].count, shorter.workload.seq_len
                yield (
                    f"use {n}x {stock.gpu.id} and sequences of {seq} tokens (no count of {stock.gpu.id} fits {request.workload.seq_len})",
                    f"--gpus {stock.gpu.id}:{n} --seq-len {seq}",
                    fewest,
                )


def _adapters(request: Request) -> Iterator[tuple[str, str, Request]]:
    """Fine-tune low-rank adapters on a frozen (or 4-bit) base instead of every weight."""
    if request.workload.mode not in (Mode.PRETRAIN, Mode.FINETUNE):
        return
    for mode, words in ((Mode.LORA, "train LoRA adapters on a frozen 16-bit base instead of every weight"),
                        (Mode.QLORA, "train QLoRA adapters on a 4-bit NF4 base instead of every weight")):
        changed = dataclasses.replace(request, workload=dataclasses.replace(request.workload, mode=mode))
        yield words, f"--mode {mode}", changed


def _offload(request: Request) -> Iterator[tuple[str, str, Request]]:
    """CPU offload, which the default search leaves out because it slows steps."""
    if request.pins.offload is not None or request.workload.mode is Mode.INFER:
        return
    wider = dataclasses.replace(request.pins, offload=tuple(Offload), zero_stage=None)
    yield "offload to CPU memory (optimizer, or parameters too): fits, but steps can be several times slower", "--offload any", dataclasses.replace(request, pins=wider)


def _other_numerics(request: Request) -> Iterator[tuple[str, str, Request]]:
    pins = request.pins
    if request.workload.mode is Mode.INFER or (pins.precision is not None and pins.optimizer is not None):
        return
    wider = Pins(**{**{f.name: getattr(pins, f.name) for f in dataclasses.fields(Pins)},
                    "precision": pins.precision or tuple(Precision), "optimizer": pins.optimizer or tuple(Optimizer)})
    flags = " ".join(f for f, p in (("--precision any", pins.precision), ("--optimizer any", pins.optimizer)) if p is None)
    yield "accept other numerics (pure 16-bit weights, Adafactor, SGD, Lion: they change convergence)", flags, dataclasses.replace(request, pins=wider)


def _relaxed_limits(request: Request) -> Iterator[tuple[str, str, Request]]:
    """The run's deadline or budget moved to what the inventory can do: the fastest run, the cheapest run."""
    job = request.job
    if job is None:
        return
    free = dataclasses.replace(request, job=dataclasses.replace(job, deadline_s=None, budget_usd=None), top=1, diverse=None)
    if job.deadline_s is not None:
        fastest = solve_request(dataclasses.replace(free, objective=Objective.TIME))
        speed = fastest.best.throughput if fastest.best is not None else None
        if isinstance(speed, TrainingSpeed) and speed.run_s is not None and speed.run_s > job.deadline_s:
            unit, name = (86400, "d") if speed.run_s >= 2 * 86400 else (3600, "h")
            allowed = -(-int(speed.run_s) // unit)
            relaxed = dataclasses.replace(job, deadline_s=float(allowed * unit))
            yield (f"allow {allowed} {name} (the fastest run this inventory can do)", f"--deadline {allowed}{name}",
                   dataclasses.replace(request, job=relaxed))
    if job.budget_usd is not None:
        cheapest = solve_request(dataclasses.replace(free, objective=Objective.COST))
        speed = cheapest.best.throughput if cheapest.best is not None else None
        if isinstance(speed, TrainingSpeed) and speed.run_usd is not None and speed.run_usd > job.budget_usd:
            allowed_usd = float(-(-int(speed.run_usd) // 1000) * 1000)
            yield (f"allow ${allowed_usd:,.0f} (the cheapest run on this inventory)", f"--budget {allowed_usd:.0f}",
                   dataclasses.replace(request, job=dataclasses.replace(job, budget_usd=allowed_usd)))


def fixes(request: Request, catalog: Catalog, limit: int = 6) -> tuple[Fix, ...]:
    """Verified changes that make an infeasible request fit, smallest first:
    pins searched again, a shorter sequence, more GPUs of a type, larger GPUs
    from the catalog, more GPUs with shorter sequences, adapters instead of
    full fine-tuning, CPU offload, other numerics."""
    out: list[Fix] = []
    sources = (
        _relaxed_pins(request),
        _relaxed_limits(request),
        _smaller_batch(request),
        _shorter_sequence(request),
        _more_gpus(request),
        _larger_gpus(request, catalog),
        _more_gpus_and_shorter_sequence(request),
        _adapters(request),
        _offload(request),
        _other_numerics(request),
    )
    for source in sources:
        for change, flags, changed in source:
            found = _verify(changed)
            if found is not None and found.best is not None:
                out.append(Fix(change, flags, found.best))
                if len(out) == limit:
                    return tuple(out)
    return tuple(out)


# ---- reasons for a winner -------------------------------------------------------------

TIE_ORDER = (
    ("departures", "departs less from the reference numerics (and offloads less)"),
    ("recompute", "recomputes less"),
    ("zero_stage", "shards less (lower ZeRO stage)"),
    ("tp", "uses less tensor parallelism"),
    ("micro_batch", "runs a larger micro-batch"),
)


def _tie_values(row: PlanRow) -> dict[str, int]:
    k = row.knobs
    return {
        "departures": len(row.departures),
        "recompute": RECOMPUTES.index(k.recompute),
        "zero_stage": k.zero_stage,
        "tp": k.tp,
        "micro_batch": -k.micro_batch,
    }


def _headroom_class(row: PlanRow) -> int:
    """`candidates.headroom_class` of a plan row."""
    step = HEADROOM_STEP.numerator * row.usable_bytes // HEADROOM_STEP.denominator
    return min((row.usable_bytes - row.total_bytes) // max(step, 1), HEADROOM_STEPS)


def _beats(a: PlanRow, b: PlanRow, objective: Objective) -> str:
    ta, tb = a.throughput, b.throughput
    if isinstance(ta, TrainingSpeed) and isinstance(tb, TrainingSpeed) and ta.run_s is not None and tb.run_s is not None:
        if objective is Objective.TIME and significant(ta.run_s) != significant(tb.run_s):
            return f"#{a.rank} trains in {format_duration(ta.run_s)}, #{b.rank} in {format_duration(tb.run_s)}"
        if objective is Objective.COST and ta.run_usd is not None and tb.run_usd is not None and \
                significant(round(ta.run_usd * 100)) != significant(round(tb.run_usd * 100)):
            return f"#{a.rank} costs ${ta.run_usd:,.0f} for the run, #{b.rank} ${tb.run_usd:,.0f}"
    elif objective is Objective.COST and a.usd_per_hour != b.usd_per_hour:
        return f"#{a.rank} costs ${a.usd_per_hour:.2f}/h, #{b.rank} ${b.usd_per_hour:.2f}/h"
    if objective is Objective.STEP_TIME and isinstance(ta, TrainingSpeed) and isinstance(tb, TrainingSpeed):
        if bool(a.departures) != bool(b.departures):
            return f"#{a.rank} keeps the reference numerics, #{b.rank} departs from them"
        rate_a, rate_b = ta.tokens_per_s / a.knobs.gpus, tb.tokens_per_s / b.knobs.gpus
        if ta.step_s * (1 + SPEED_TOLERANCE) < tb.step_s:
            return f"#{a.rank} is faster: {ta.tokens_per_s:,.0f} tokens/s against {tb.tokens_per_s:,.0f}"
        headroom_a, headroom_b = a.usable_bytes - a.total_bytes, b.usable_bytes - b.total_bytes
        same = (f"steps within {float(SPEED_TOLERANCE):.0%} ({rate_a:,.0f} and {rate_b:,.0f} tokens/s per GPU), "
                "which the speed model cannot tell apart")
        if _headroom_class(a) != _headroom_class(b):
            return f"{same}; #{a.rank} leaves more headroom ({headroom_a / GIB:.1f} GiB against {headroom_b / GIB:.1f})"
    elif objective is Objective.GPUS:
        same = f"same {a.knobs.gpus} GPUs"
    else:
        same = f"same {objective} to {RANKING_DIGITS} significant digits"
    if objective is Objective.GPUS and a.knobs.gpus != b.knobs.gpus:
        return f"#{a.rank} needs {a.knobs.gpus} GPUs, #{b.rank} {b.knobs.gpus}"
    va, vb = _tie_values(a), _tie_values(b)
    for key, words in TIE_ORDER:
        if va[key] != vb[key]:
            return f"{same}; #{a.rank} {words}"
    return f"{same} and tie-break knobs; #{a.rank} comes first in the fixed order of GPU type, precision, optimizer"


def _step(plan: Plan) -> str | None:
    """Where the first plan's step time goes (training plans)."""
    best = plan.best
    if best is None or not isinstance(best.throughput, TrainingSpeed):
        return None
    req = plan.request
    k = KnobArrays.from_knobs([best.knobs], [s.gpu.id for s in req.inventory])
    parts = step_terms(req.model, req.workload, k, [s.gpu for s in req.inventory]).breakdown(k.dp)
    total = sum(float(v[0]) for v in parts.values())
    shares = ", ".join(f"{name} {float(v[0]):.2f} s ({100 * float(v[0]) / total:.0f}%)" for name, v in parts.items() if float(v[0]) >= 0.005 * total)
    return f"#1's step takes {best.throughput.step_s:.2f} s at {100 * best.throughput.mfu:.0f}% MFU: {shares}"


def reasons(plan: Plan) -> tuple[str, ...]:
    """Why the winner: its memory headroom and largest component, why not
    fewer GPUs (verified by re-solving with one GPU less), and what puts it
    ahead of the runner-up."""
    best = plan.best
    if best is None:
        return ()
    mem = best.memory_bytes
    largest = max(mem, key=lambda name: mem[name])
    out = [
        (
            f"#1 uses {best.total_bytes / GIB:.2f} of {best.usable_bytes / GIB:.2f} GiB per GPU "
            f"({(best.usable_bytes - best.total_bytes) / GIB:.2f} GiB headroom); the largest part is {largest} "
            f"({mem[largest] / GIB:.2f} GiB)"
        )
    ]
    step = _step(plan)
    if step is not None:
        out.append(step)
    n = best.knobs.gpus
    if plan.request.objective is Objective.STEP_TIME and plan.fewest_gpus is not None:
        ref, any_ = plan.fewest_gpus
        out.append(f"#1 is the fastest plan with the numerics searched; the fewest GPUs that fit: {_fewest_words(ref, any_)} "
                   "(--minimize gpus ranks by GPU count)")
    elif n > 1 and plan.request.objective is not Objective.TIME:
        fewer = dataclasses.replace(
            plan.request,
            inventory=tuple(GpuStock(s.gpu, min(s.count, n - 1)) for s in plan.request.inventory),
            top=1,
            diverse=None,
        )
        smaller = solve_request(fewer)
        if smaller.fits and smaller.best is not None:
            alt = smaller.best
            speed = alt.throughput if isinstance(alt.throughput, TrainingSpeed) else None
            if speed is not None and speed.run_s is not None and plan.request.job is not None:
                cost = "" if speed.run_usd is None else f", ${speed.run_usd:,.0f}"
                out.append(f"the best with at most {n - 1} GPUs of a type: {alt.knobs.gpus}x {alt.knobs.gpu}, "
                           f"{format_duration(speed.run_s)}{cost}")
            else:
                out.append(f"{alt.knobs.gpus}x {alt.knobs.gpu} would also fit, at ${alt.usd_per_hour:.2f}/h")
        elif smaller.explanation:
            out.append(f"with at most {n - 1} GPUs of each type: {smaller.explanation}")
    if len(plan.rows) > 1:
        out.append(f"#1 over #2: {_beats(plan.rows[0], plan.rows[1], plan.request.objective)}")
    return tuple(out)


def _fewest_words(reference: int | None, any_: int | None) -> str:
    """'8 with the reference numerics, 5 with any', as the header and the reasons say it."""
    ref = "none" if reference is None else str(reference)
    if any_ is None or any_ == reference:
        return f"{ref} GPUs with the reference numerics or any other"
    return f"{ref} with the reference numerics, {any_} with other numerics"
