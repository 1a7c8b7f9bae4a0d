"""Layouts and planner predictions for bench/dist_peak.py (torch-free, so tests can use them).

Each measured layout maps to the planner's `fsdp` framework profile at a ZeRO
stage (planner/states.py `_fsdp`): DDP = 0, DDP + ZeroRedundancyOptimizer = 1,
FSDP2 `fully_shard(reshard_after_forward=False)` (SHARD_GRAD_OP) = 2,
`fully_shard(reshard_after_forward=True)` (FULL_SHARD) = 3, and HSDP (FULL_SHARD
over a 2-D mesh, sharding within groups of `dp_shard` ranks) = 3 with
`dp_shard`. No margins: predicted allocated is the sum of the components.
"""

from __future__ import annotations

from peak_specs import ARCH_BY_NAME, Arch, spec
from results_csv import refresh_predictions

from planner.architecture import param_counts
from planner.grid import KnobArrays
from planner.memory import MemoryBreakdown, breakdown
from planner.specs import (
    Accounting,
    AttentionKernel,
    Framework,
    Knobs,
    Margins,
    Optimizer,
    Precision,
    Recompute,
    Workload,
)

ZERO_STAGE = {"ddp": 0, "ddp-zero1": 1, "fsdp-shard-grad-op": 2, "fsdp-full-shard": 3, "hsdp-full-shard": 3}
COMPONENTS = ("weights", "gradients", "optimizer", "activations", "logits", "zero_buffers")


def predicted_breakdown(arch: Arch, layout: str, world: int, dp_shard: int, precision: Precision, recompute: Recompute,
                        micro_batch: int, seq_len: int) -> MemoryBreakdown:
    """The planner's per-rank breakdown for one measured configuration (AdamW, SDPA, fsdp profile, DP = world)."""
    model = spec(arch, seq_len)
    w = Workload(seq_len, None, Accounting.FULL, AttentionKernel.FLASH, Framework.FSDP, Margins(0, 0))
    knobs = Knobs("gpu", precision, Optimizer.ADAMW, recompute, ZERO_STAGE[layout], 1, world, micro_batch, dp_shard=dp_shard)
    return breakdown(model, param_counts(model), w, KnobArrays.from_knobs([knobs], ["gpu"]))


def predicted_components(row: dict[str, str]) -> dict[str, int]:
    """The breakdown's components and `allocated` for a row of bench/results/dist_peak.csv."""
    b = predicted_breakdown(ARCH_BY_NAME[row["arch"]], row["layout"], int(row["world_size"]), int(row["dp_shard"]),
                            Precision(row["precision"]), Recompute(row["recompute"]), int(row["micro_batch"]),
                            int(row["seq_len"]))
    return {**{c: int(getattr(b, c)[0]) for c in COMPONENTS}, "allocated": int(b.allocated[0])}


def predict_row(row: dict[str, str]) -> int:
    """Predicted allocated bytes per rank for a row of bench/results/dist_peak.csv."""
    return predicted_components(row)["allocated"]


def refresh(path: str) -> int:
    """Recompute the predicted columns of bench/results/dist_peak.csv with the current planner, keeping the
    measurements (after a change to the memory model: `python bench/dist_specs.py bench/results/dist_peak.csv`)."""

    def predicted(row: dict[str, str]) -> dict[str, int]:
        got = predicted_components(row)
        return {"predicted_allocated_bytes": got["allocated"], **{f"predicted_{part}_bytes": got[part] for part in COMPONENTS}}

    return refresh_predictions(path, predicted)


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        print(f"{name}: {refresh(name)} rows refreshed")
