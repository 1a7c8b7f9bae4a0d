"""FSDP hybrid sharding (HSDP): states sharded within a group, replicated across groups;
its memory, its step time, its pins and its errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import EMPTY_CATALOG, gpu

import planner
from planner.api import evaluate_config
from planner.catalog import load_catalog
from planner.cli import main
from planner.grid import KnobArrays
from planner.request import build_request
from planner.specs import GpuStock, Knobs, Optimizer, Precision, Recompute
from planner.steptime import step_terms

CATALOG = load_catalog()
PINNED = {"framework": "fsdp", "precision": "bf16-mixed", "optimizer": "adamw", "recompute": "full", "zero": "3", "tp": "1", "pp": "1", "cp": "1",
          "micro_batch": "1"}


def test_hsdp_states_are_full_sharding_over_the_shard_group() -> None:
    """DP 64 as 8 replicas of an 8-way shard group holds what DP 8 with full sharding holds."""
    hybrid = evaluate_config("llama3.1-8b", "h100-80g:64", dp="64", dp_shard="8", **PINNED)
    full_over_group = evaluate_config("llama3.1-8b", "h100-80g:8", dp="8", **PINNED)
    full_over_all = evaluate_config("llama3.1-8b", "h100-80g:64", dp="64", **PINNED)
    assert hybrid.knobs.dp_shard == 8 and full_over_group.knobs.dp_shard == 0
    assert hybrid.memory_bytes == full_over_group.memory_bytes
    for part in ("weights", "gradients", "optimizer"):
        assert hybrid.memory_bytes[part] > full_over_all.memory_bytes[part]


def test_node_pin_shards_within_each_node_and_the_layout_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    result = planner.plan("13b", "h100-80g:64", framework="fsdp", dp_shard="node", top=4)
    assert result.fits
    for row in result.rows:
        k = row.knobs
        assert k.dp_shard * k.tp * k.cp == 8 and k.dp % k.dp_shard == 0 and k.dp > k.dp_shard and k.zero_stage >= 2
        assert f"HSDP{k.dp_shard}" in k.layout
    assert main(["--model", "13b", "--gpus", "h100-80g:64", "--framework", "fsdp", "--dp-shard", "node", "--json"]) == 0
    assert '"dp_shard": 8' in capsys.readouterr().out


def test_hsdp_moves_the_gathers_off_the_network() -> None:
    """13B, ZeRO-3, 64 GPUs on a slow network: every micro-batch's gathers cross nodes under full
    sharding, stay on NVLink under HSDP; only the gradient shards' all-reduce crosses (the model's
    step times, not clocks)."""
    req = build_request(CATALOG.model("llama2-13b"), (GpuStock(gpu(network_gbps=12.5), 64),), catalog=EMPTY_CATALOG,
                        global_batch=256, framework="fsdp")
    base = {"gpu": "gpu", "precision": Precision.BF16_MIXED, "optimizer": Optimizer.ADAMW, "recompute": Recompute.FULL,
            "zero_stage": 3, "tp": 1, "dp": 64, "micro_batch": 1}
    k = KnobArrays.from_knobs([Knobs(**base), Knobs(**base, dp_shard=8)], ["gpu"])  # type: ignore[arg-type]
    terms = step_terms(req.model, req.workload, k, [req.inventory[0].gpu])
    full, hybrid = terms.seconds(np.array([64, 64]))
    assert hybrid < full
    comm = terms.breakdown(np.array([64, 64]))["DP communication and optimizer step"]
    assert comm[1] < comm[0] / 2


def test_ring_latency_grows_with_dp_without_a_global_batch() -> None:
    """One micro-batch per step: each ZeRO-3 gather takes DP - 1 ring steps across nodes."""
    req = build_request(CATALOG.model("llama2-13b"), (GpuStock(gpu(), 4096),), catalog=EMPTY_CATALOG, framework="fsdp")
    req = dataclasses.replace(req, workload=dataclasses.replace(req.workload, global_batch=None))  # the default batch would fix m
    base = {"gpu": "gpu", "precision": Precision.BF16_MIXED, "optimizer": Optimizer.ADAMW, "recompute": Recompute.FULL,
            "zero_stage": 3, "tp": 1, "dp": 64, "micro_batch": 1}
    k = KnobArrays.from_knobs([Knobs(**base)] * 2, ["gpu"])  # type: ignore[arg-type]
    terms = step_terms(req.model, req.workload, k, [req.inventory[0].gpu])
    small, large = terms.seconds(np.array([256, 2048]))
    assert large > small and terms.gamma.max() > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dp-shard", "8"], "--dp-shard (hybrid sharding, HSDP) needs --framework fsdp"),
        (["--dp-shard", "node", "--framework", "fsdp", "--zero", "1"], "use --zero 2 or 3"),
        (["--dp-shard", "3", "--dp", "8", "--framework", "fsdp"], "must divide --dp 8"),
        (["--dp-shard", "eight", "--framework", "fsdp"], "--dp-shard expects 'all', 'node' or a shard-group size"),
    ],
)
def test_bad_dp_shard_is_a_one_line_error(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["--model", "13b", "--gpus", "h100-80g:64", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_binding_shard_group_pin_is_offered_back_in_the_flag_s_words() -> None:
    """70B on 32 H100 with states sharded over one node (8 ranks) does not fit; over all 32 it does."""
    pins = {"framework": "fsdp", "zero": "3", "dp": "32", "recompute": "full", "micro_batch": "1", "precision": "bf16-mixed",
            "optimizer": "adamw", "pp": "1", "tp": "1", "cp": "1", "seq_len": 4096}
    result = planner.plan("llama3.1-70b", "h100-80g:32", dp_shard="node", **pins)
    assert result.status == "infeasible"
    fix = next(f for f in result.fixes if "--dp-shard" in f.change)
    assert fix.change == "stop pinning --dp-shard node (search it)" and fix.plan.fits and fix.plan.knobs.dp_shard == 0
