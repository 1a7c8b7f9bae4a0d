"""The library entry points the CLI (and notebooks) call."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from planner import advice, capacity
from planner.catalog import Catalog, load_catalog
from planner.engine import solve_request
from planner.plan import Plan, PlanRow, PlanStatus, make_row
from planner.request import build_request
from planner.space import build_space
from planner.specs import GpuStock, Model


def plan(
    model: str | Model,
    gpus: str | tuple[GpuStock, ...] | None = None,
    *,
    explain: bool = False,
    maximize: str | None = None,
    catalog: Catalog | None = None,
    **options: Any,
) -> Plan:
    """Plan training of `model` on the inventory `gpus` ('a100-40g:8,h100:4').

    Options are those of `planner.request.build_request`: seq_len,
    global_batch, precision, optimizer, recompute, tp, dp, zero, micro_batch
    (each a value, a list, 'any' or None to search), objective ('gpus' or
    'cost'), top, accounting ('full' or 'seed'), loss ('full', 'fused', 'chunked', 'fused-linear';
    default the stack's), attention ('flash' or 'eager'), framework (a training-stack profile,
    planner.profiles), compile, diverse, margin ('2GiB' or '5%'), overhead_gib, fragmentation_pct,
    time_limit_s; tokens ('2T'), budget ('1.5M' USD), deadline ('30d');
    buy=True to choose GPU types and counts from the catalog (gpus then
    lists allowed types with optional caps, 'h100-80g:<=512');
    mode ('pretrain', 'finetune', 'lora', 'qlora', 'infer'),
    lora_rank, lora_targets, context, batch, weight_format, kv_dtype. With
    `maximize` ('context' or 'batch') the plans are at the largest value the
    inventory holds. When nothing fits, the plan carries verified fixes; with
    `explain`, reasons why the first plan wins. Raises PlannerInputError on
    bad input.
    """
    catalog = catalog or load_catalog()
    request = build_request(model, gpus, catalog=catalog, **options)
    result = capacity.maximize(request, maximize) if maximize is not None else solve_request(request)
    if result.status is PlanStatus.INFEASIBLE:
        result = dataclasses.replace(result, fixes=advice.fixes(request, catalog))
    if explain and result.fits:
        result = dataclasses.replace(result, reasons=advice.reasons(result))
    return result


def evaluate_config(model: str | Model, gpus: str, **knobs: Any) -> PlanRow:
    """The memory breakdown of one fully specified configuration, fitting or not.

    `knobs` must pin precision, optimizer, recompute, zero, tp, dp and
    micro_batch to single values (plus any other `plan` option); dp_shard
    (HSDP shard group, fsdp only) defaults to 'all', the global batch to one
    micro-batch per DP rank (no accumulation).
    """
    if knobs.get("mode") != "infer":
        knobs.setdefault("dp_shard", "all")  # shard over all of DP unless HSDP is asked for (a no-op outside fsdp)
        if knobs.get("global_batch") is None and str(knobs.get("micro_batch", "")).isdigit() and str(knobs.get("dp", "")).isdigit():
            knobs["global_batch"] = int(knobs["micro_batch"]) * int(knobs["dp"])  # not the planner's default batch
    request = build_request(model, gpus, **knobs)
    space = build_space(request)
    if len(space.grid) != 1:
        raise ValueError(f"evaluate_config needs every knob pinned to one value and one GPU type; {len(space.grid)} configurations match")
    dp = request.pins.dp
    if dp is None or len(dp) != 1:
        raise ValueError("evaluate_config needs dp pinned to one value")
    k = space.grid.with_dp(np.asarray(dp, dtype=np.int64))
    return make_row(space, k, 0, proved_optimal=False)
