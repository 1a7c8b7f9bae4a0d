"""Render a Plan: terminal table, JSON, CSV, Markdown. Bytes become GiB (2^30) only here."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from enum import StrEnum

from planner.architecture import param_counts
from planner.batch import PRETRAIN_BATCH_SOURCE, default_pretrain_batch
from planner.numerics import reference_format, reference_precision
from planner.perf import TrainingSpeed
from planner.plan import Plan, PlanRow
from planner.request import DEFAULT_FINETUNE_GLOBAL_BATCH
from planner.specs import Mode
from planner.units import format_count, format_duration

GIB = 2**30
FRONT_LINES = 6
MEMORY_COLUMNS = (
    ("weights", "weights"),
    ("gradients", "grads"),
    ("optimizer", "optim"),
    ("activations", "activ"),
    ("logits", "logits"),
    ("zero_buffers", "zero-buf"),
    ("fragmentation", "frag"),
    ("overhead", "ovhd"),
)
SERVING_MEMORY_COLUMNS = (
    ("weights", "weights"),
    ("kv_cache", "kv-cache"),
    ("activations", "work"),
    ("logits", "logits"),
    ("fragmentation", "frag"),
    ("overhead", "ovhd"),
)


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    MARKDOWN = "markdown"


def gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def _header(plan: Plan) -> list[str]:
    req = plan.request
    w = req.workload
    params = param_counts(req.model).total
    inv = ", ".join(f"{s.count}x {s.gpu.id} ({s.gpu.usable_memory_bytes / GIB:.1f} GiB usable)" for s in req.inventory)
    if req.procurement:
        caps = sorted({s.count for s in req.inventory})
        cap = f"up to {caps[0]}" if len(caps) == 1 else "up to the caps given"
        inv = f"to buy: {cap} of each of {len(req.inventory)} priced GPU types ({', '.join(s.gpu.id for s in req.inventory)})"
    job = req.job
    objective = {"gpus": "fewest GPUs", "cost": "lowest cost of the run" if job else "lowest cost per hour",
                 "time": "shortest run", "step-time": "fastest step, reference numerics first"}[str(req.objective)]
    n = len(plan.rows)
    if w.mode is Mode.INFER:
        batch = req.pins.micro_batch[0] if req.pins.micro_batch else 1
        what = f"serving | context {w.seq_len} | batch {batch} | {w.accounting} accounting"
    else:
        gb = "free" if w.global_batch is None else f"{w.global_batch} sequences"
        lora = f" r={w.lora_rank} on {w.lora_targets}" if w.mode.adapters else ""
        what = (f"{w.mode}{lora} | seq {w.seq_len} | global batch {gb} | "
                f"{w.accounting} accounting, {w.framework} framework, {w.attention} attention"
                + (f", {w.loss} loss" if w.loss != "full" else ""))
    run = []
    if job is not None:
        limits = ([f"deadline {format_duration(job.deadline_s)}"] if job.deadline_s else []) + (
            [f"budget ${job.budget_usd:,.0f}"] if job.budget_usd else [])
        source = "" if job.tokens_source == "given" else f" ({job.tokens_source})"
        run = [f"run: {format_count(job.tokens)} tokens{source}" + "".join(f" | {x}" for x in limits)]
    return [
        f"{req.model.name} ({params / 1e9:.2f}B params) | {what}",
        *run,
        f"inventory: {inv}",
        *_batch_and_fewest(plan),
        f"status: {plan.status} | objective: {objective} | {n} plan{'s' if n != 1 else ''} | solved in {plan.solve_s:.2f} s",
    ]


def _batch_and_fewest(plan: Plan) -> list[str]:
    """The global batch every plan runs (and where the default comes from); the fewest GPUs that fit."""
    req, w = plan.request, plan.request.workload
    out = []
    if w.mode is not Mode.INFER and w.global_batch is not None:
        tokens = w.global_batch * w.seq_len
        default = (default_pretrain_batch(param_counts(req.model).total, w.seq_len) if w.mode is Mode.PRETRAIN
                   else DEFAULT_FINETUNE_GLOBAL_BATCH.get(w.mode))
        source = {Mode.PRETRAIN: PRETRAIN_BATCH_SOURCE, Mode.FINETUNE: "Llama 2-Chat's SFT batch",
                  Mode.LORA: "QLoRA's batch", Mode.QLORA: "QLoRA's batch"}.get(w.mode, "")
        why = f" (the default: {source}; --global-batch sets it)" if w.global_batch == default else ""
        out.append(f"global batch: {w.global_batch} sequences = {tokens / 2**20:.2f}M tokens per step{why}")
    if plan.fewest_gpus is not None and w.mode is not Mode.INFER:
        ref, any_ = plan.fewest_gpus
        numerics = sorted({f"{reference_precision(s.gpu)} + adamw" for s in req.inventory})
        words = "none" if ref is None else str(ref)
        extra = "" if any_ is None or any_ == ref else f", {any_} with other numerics (8-bit optimizer, fp8, pure 16-bit, offload)"
        out.append(f"fewest GPUs that fit: {words} with {' / '.join(numerics)}{extra}")
    return out


def _serving_columns(rows: list[PlanRow]) -> list[tuple[str, bool, Callable[[PlanRow], str]]]:
    """(heading, left-aligned, cell) per column of a serving plan."""
    cols: list[tuple[str, bool, Callable[[PlanRow], str]]] = [
        ("GPUs", True, lambda r: f"{r.knobs.gpus}x {r.knobs.gpu}"),
        ("weights-fmt", True, lambda r: str(r.knobs.weight_format)),
        ("kv-fmt", True, lambda r: str(r.knobs.kv_format)),
        ("layout", True, lambda r: r.knobs.layout.replace(" DP1", "") or "1 GPU"),
        ("batch", False, lambda r: str(r.knobs.micro_batch)),
    ]
    cols += [(label, False, lambda r, n=name: gib(r.memory_bytes[n])) for name, label in SERVING_MEMORY_COLUMNS]
    cols += [
        ("total", False, lambda r: gib(r.total_bytes)),
        ("usable", False, lambda r: gib(r.usable_bytes)),
        ("fits", False, lambda r: "yes" if r.fits else "NO"),
        ("decode tok/s", False, lambda r: f"{r.throughput.decode_tokens_per_s:.0f}" if r.throughput else "-"),
        ("$/Mtok", False, lambda r: "-" if not r.throughput or r.throughput.usd_per_million_tokens is None else f"{r.throughput.usd_per_million_tokens:.2f}"),
        ("$/h", False, lambda r: "-" if r.usd_per_hour is None else f"{r.usd_per_hour:.2f}"),
    ]
    return cols


def _numerics(r: PlanRow) -> str:
    k = r.knobs
    return f"{k.precision} {k.optimizer}" + ("" if k.offload == "none" else f" off:{k.offload}")


def _compact_columns(rows: list[PlanRow]) -> list[tuple[str, bool, Callable[[PlanRow], str]]]:
    """The default training table: what a user chooses and what it costs, in under 120 columns."""
    cols: list[tuple[str, bool, Callable[[PlanRow], str]]] = [
        ("GPUs", True, lambda r: f"{r.knobs.gpus}x {r.knobs.gpu}"),
        ("numerics", True, _numerics),
        ("recomp", True, lambda r: str(r.knobs.recompute)),
        ("Z", False, lambda r: str(r.knobs.zero_stage)),
        ("layout", True, lambda r: r.knobs.layout),
        ("mb x acc", False, lambda r: f"{r.knobs.micro_batch}x{r.gradient_accumulation}"),
        ("GiB use/cap", False, lambda r: f"{r.total_bytes / GIB:.1f}/{r.usable_bytes / GIB:.1f}"),
        ("free", False, lambda r: f"{(r.usable_bytes - r.total_bytes) / GIB:.1f}" if r.fits else "NO"),
    ]
    return cols + _speed_and_cost_columns(rows)


def _columns(rows: list[PlanRow]) -> list[tuple[str, bool, Callable[[PlanRow], str]]]:
    """(heading, left-aligned, cell) per column of --breakdown; offload columns only when a row offloads."""
    cols: list[tuple[str, bool, Callable[[PlanRow], str]]] = [
        ("GPUs", True, lambda r: f"{r.knobs.gpus}x {r.knobs.gpu}"),
        ("precision", True, lambda r: str(r.knobs.precision)),
        ("optimizer", True, lambda r: str(r.knobs.optimizer)),
        ("recompute", True, lambda r: str(r.knobs.recompute)),
        ("ZeRO", False, lambda r: str(r.knobs.zero_stage)),
        ("layout", True, lambda r: r.knobs.layout),
        ("mb", False, lambda r: str(r.knobs.micro_batch)),
        ("accum", False, lambda r: str(r.gradient_accumulation)),
    ]
    offloading = any(r.knobs.offload != "none" for r in rows)
    if offloading:
        cols.append(("offload", True, lambda r: str(r.knobs.offload)))
    cols += [(label, False, lambda r, n=name: gib(r.memory_bytes[n])) for name, label in MEMORY_COLUMNS]
    cols += [("total", False, lambda r: gib(r.total_bytes)), ("usable", False, lambda r: gib(r.usable_bytes))]
    if offloading:
        cols.append(("cpu", False, lambda r: gib(r.cpu_bytes)))
    cols.append(("fits", False, lambda r: "yes" if r.fits else "NO"))
    return cols + _speed_and_cost_columns(rows)


def _speed_and_cost_columns(rows: list[PlanRow]) -> list[tuple[str, bool, Callable[[PlanRow], str]]]:
    """The columns both tables end with: speed and MFU when rows carry a training speed, the run's time and
    cost when a run is given, then $/h."""
    cols: list[tuple[str, bool, Callable[[PlanRow], str]]] = []
    speeds = [r.throughput for r in rows if isinstance(r.throughput, TrainingSpeed)]
    if speeds:
        cols += [
            ("tok/s/GPU", False, lambda r: _speed(r, lambda t: f"{t.tokens_per_s / r.knobs.gpus:,.0f}")),
            ("MFU", False, lambda r: _speed(r, lambda t: f"{100 * t.mfu:.0f}%")),
        ]
        if any(t.run_s is not None for t in speeds):
            cols += [
                ("run", False, lambda r: _speed(r, lambda t: "-" if t.run_s is None else format_duration(t.run_s))),
                ("run $", False, lambda r: _speed(r, lambda t: "-" if t.run_usd is None else f"{t.run_usd:,.0f}")),
            ]
    cols.append(("$/h", False, lambda r: "-" if r.usd_per_hour is None else f"{r.usd_per_hour:.2f}"))
    return cols


def _speed(r: PlanRow, cell: Callable[[TrainingSpeed], str]) -> str:
    return cell(r.throughput) if isinstance(r.throughput, TrainingSpeed) else "-"


def _table(shown: list[tuple[str, PlanRow]], serving: bool, markdown: bool = False, breakdown: bool = False) -> list[str]:
    cols = (_serving_columns if serving else _columns if breakdown else _compact_columns)([r for _, r in shown])
    if not serving and not breakdown:
        for dropped in DROP_TO_FIT:  # the compact table gives up these columns, in order, to fit the width
            if _table_width(cols, shown) <= terminal_width():
                break
            cols = [c for c in cols if c[0] != dropped]
    rows = [["#"] + [c[0] for c in cols]] + [[label] + [c[2](r) for c in cols] for label, r in shown]
    left = {0} | {i + 1 for i, c in enumerate(cols) if c[1]}
    if markdown:
        rule = ["---" if i in left else "--:" for i in range(len(rows[0]))]
        return ["| " + " | ".join(row) + " |" for row in (rows[0], rule, *rows[1:])]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]


DROP_TO_FIT = ("$/h", "recomp")  # --breakdown shows them


def _table_width(cols: list[tuple[str, bool, Callable[[PlanRow], str]]], shown: list[tuple[str, PlanRow]]) -> int:
    widths = [max([len(label) for label, _ in shown] + [1])]
    widths += [max([len(c[0])] + [len(c[2](r)) for _, r in shown]) for c in cols]
    return sum(widths) + 2 * len(cols)


def render_table(plan: Plan, markdown: bool = False, breakdown: bool = False, width: int | None = None) -> str:
    """The terminal table, or the same content as Markdown (a table, lists for the notes); with
    `breakdown`, every memory component. Notes wrap at `width` (the terminal's, at most 120)."""
    lines = _header(plan)
    shown = [(str(r.rank), r) for r in plan.rows]
    if plan.reference is not None:
        shown.append(("ref", plan.reference))
    if not plan.rows and plan.closest is not None:
        shown.append(("closest", plan.closest))
    if plan.explanation:
        lines.append(plan.explanation)
    if shown:
        if not plan.rows:
            within_memory = plan.closest is not None and plan.closest.fits
            lines.append("closest configuration (fits in memory, misses the run's limits):" if within_memory
                         else "closest configuration (does not fit):")
        lines.append("")
        serving = plan.request.workload.mode is Mode.INFER
        table = _table(shown, serving, markdown, breakdown)
        lines += [TABLE_MARK + t for t in table] if markdown else table
        compact = not serving and not breakdown
        lines.append(
            ("legend: numerics = precision and optimizer; recomp = activation recomputation; Z = ZeRO stage; mb x acc = "
             "micro-batch x gradient accumulation steps; GiB use/cap per GPU (2^30 bytes, margins included) and free = headroom; "
             "--breakdown shows every memory component" if compact else
             "memory per GPU in GiB (2^30 bytes); total = sum of the components")
            + ("; cpu = host memory offload needs per GPU" if any(r.cpu_bytes for _, r in shown) and not compact else "")
            + "; $/h = GPUs x on-demand price"
            + ("; tok/s/GPU from the step-time model (matmul efficiency fitted per GPU type, a rough default where "
               "uncalibrated); MFU = model FLOPs / (GPUs x dense peak of the precision)"
               if any(isinstance(r.throughput, TrainingSpeed) for _, r in shown) else "")
        )
        if plan.reference is not None:
            lines.append("ref: the best plan with the reference numerics, for comparison")
        notes: dict[str, list[str]] = {}
        for label, r in shown:
            for d in r.departures:
                notes.setdefault(d, []).append(label)
        if notes:
            refs = sorted({f"{reference_format(r.gpu)} weights and cache" if serving else f"{reference_precision(r.gpu)} + adamw"
                           for _, r in shown})
            lines.append(f"departures from the reference numerics ({', '.join(refs)}):")
            lines += [f"  {', '.join(labels)}: {d}" for d, labels in notes.items()]
        priced = {r.gpu.id: r.gpu.price for _, r in shown if r.gpu.price is not None}
        for gpu_id, p in sorted(priced.items()):
            lines.append(f"price {gpu_id}: ${p.usd_per_hour:.2f}/GPU-h, {p.provider} ({p.date.isoformat()})")
    if plan.front:
        lines.append(f"cost/time front ({len(plan.front)} configurations neither slower nor dearer than another; --json lists them):")
        shown_front = plan.front if len(plan.front) <= FRONT_LINES else [plan.front[round(i * (len(plan.front) - 1) / (FRONT_LINES - 1))]
                                                                           for i in range(FRONT_LINES)]
        for p in shown_front:
            lines.append(f"  {format_duration(p.run_s):>9}  ${p.run_usd:>14,.0f}  {p.knobs.gpus}x {p.knobs.gpu}, {p.knobs.describe(False)}")
    if plan.fixes:
        lines.append("ways to make it fit (each verified by solving again):")
        for i, fix in enumerate(plan.fixes, start=1):
            lines.append(f"  {i}. {fix.change}   [{fix.flags}]")
            lines.append(f"     -> {summary(fix.plan)}")
    elif plan.status == "infeasible":
        lines.append("no single change tried makes it fit (pins, sequence length, more or larger GPUs, other numerics)")
    if plan.reasons:
        lines.append("why #1:")
        lines += [f"  - {r}" for r in plan.reasons]
    lines.append("assumptions:")
    lines += [f"  - {a}" for a in plan.assumptions]
    if markdown:
        return _as_markdown(lines)
    return "\n".join(_wrap(lines, terminal_width() if width is None else width))


MAX_WIDTH = 120


def terminal_width() -> int:
    """COLUMNS (or the terminal's width), at most MAX_WIDTH and at least 60."""
    return max(60, min(MAX_WIDTH, shutil.get_terminal_size((MAX_WIDTH, 24)).columns))


def _wrap(lines: list[str], width: int) -> list[str]:
    """Prose lines wrapped at `width`, list items with a hanging indent; table rows as they are."""
    out: list[str] = []
    for line in lines:
        if len(line) <= width or line.startswith(("#", *(f"{i} " for i in range(10)), "ref ", "closest ")):
            out.append(line)
            continue
        indent = len(line) - len(line.lstrip(" "))
        hang = " " * (indent + 2)
        out += textwrap.wrap(line, width=width, initial_indent="", subsequent_indent=hang, break_on_hyphens=False)
    return out


TABLE_MARK = "\0"


def _as_markdown(lines: list[str]) -> str:
    """Text lines to Markdown: the table as is, indented lines as list items, others as paragraphs."""
    out: list[str] = []
    for line in lines:
        if line.startswith(TABLE_MARK):
            out.append(line[len(TABLE_MARK):])
        elif line.startswith("  "):
            item = line.strip()
            out.append(item if item.startswith("- ") else f"- {item}")
        elif line:
            if out and out[-1]:
                out.append("")
            out.append(line)
        else:
            out.append("")
    return "\n".join(out)


def summary(r: PlanRow) -> str:
    """One line: the knobs, memory against capacity, cost, departures."""
    k = r.knobs
    cost = "" if r.usd_per_hour is None else f", ${r.usd_per_hour:.2f}/h"
    departs = f" (departs: {'; '.join(d.split(':')[0] for d in r.departures)})" if r.departures else ""
    run = ""
    if isinstance(r.throughput, TrainingSpeed) and r.throughput.run_s is not None:
        usd = "" if r.throughput.run_usd is None else f", ${r.throughput.run_usd:,.0f}"
        run = f"; run {format_duration(r.throughput.run_s)}{usd}"
    return f"{k.gpus}x {k.gpu}, {k.describe(r.mode is Mode.INFER)}: {gib(r.total_bytes)} of {gib(r.usable_bytes)} GiB{cost}{run}{departs}"


def render(plan: Plan, fmt: Format = Format.TABLE, breakdown: bool = False) -> str:
    if fmt is Format.JSON:
        return plan.to_json()
    if fmt is Format.CSV:
        return plan.to_frame().to_csv(index=False)
    return render_table(plan, markdown=fmt is Format.MARKDOWN, breakdown=breakdown)
