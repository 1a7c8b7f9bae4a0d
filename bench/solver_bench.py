"""Solver speed and scale against the brute-force oracle, measured in the same run.

For each scenario (7B to 405B, 1 to 16,384 GPUs, 1 to 20 GPU types, knobs
free, pinned or widened, GPU-count and cost objectives) it times the planner's
solve (space + DP thresholds + CP-SAT, top 1 and top 5) and the oracle's
exhaustive enumeration over the same space, checks that both find the same
optimum, and records the space size. Also times the `plan` command end to end.

    pip install -e '.[plot]' && python bench/solver_bench.py
    # writes bench/results/solver_bench.csv and bench/results/solver_bench.png

Targets (issue "Solver you can trust"): single-type plan < 0.3 s, full-catalog
procurement < 3 s, CLI end to end < 1.5 s, solver time growing far slower
than the space. Absolute times depend on the machine; the ratio to the
oracle in the same run is the figure to compare across machines.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import ortools
from results_csv import write_results

import planner
from planner import oracle
from planner.candidates import find_candidates
from planner.catalog import load_catalog
from planner.request import build_request
from planner.solver import solve
from planner.space import build_space
from planner.specs import GpuStock, Request

RESULTS = Path(__file__).parent / "results"
CATALOG = load_catalog()
PINNED = {"precision": "bf16-mixed", "optimizer": "adamw", "recompute": "full"}
WIDE = {"precision": "any", "optimizer": "any"}


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    inventory: tuple[GpuStock, ...]
    options: dict[str, object]

    def request(self) -> Request:
        return build_request(self.model, self.inventory, catalog=CATALOG, **self.options)


def stock(spec: str) -> tuple[GpuStock, ...]:
    out = []
    for part in spec.split(","):
        name, count = part.split(":")
        out.append(GpuStock(CATALOG.gpu(name), int(count)))
    return tuple(out)


def _spot(gpu_id: str, count: int) -> GpuStock:
    gpu = CATALOG.gpu(gpu_id)
    assert gpu.price is not None
    spot = dataclasses.replace(gpu, id=f"{gpu_id}-spot", price=dataclasses.replace(gpu.price, usd_per_hour=0.6 * gpu.price.usd_per_hour))
    return GpuStock(spot, count)


def twenty_types(count: int) -> tuple[GpuStock, ...]:
    """The 18 priced catalog GPUs plus two spot-priced variants (same cards, 60% of the price)."""
    priced = [GpuStock(g, count) for g in CATALOG.gpus if g.price is not None]
    return (*priced, _spot("h100-80g", count), _spot("a100-80g", count))


def scenarios() -> list[Scenario]:
    out = [Scenario("main job", "13b", stock("a100-40g:8"), {})]
    for model in ("7b", "13b", "70b", "405b", "mixtral-8x7b"):
        for count in (1, 8, 64, 512, 4096, 16384):
            out.append(Scenario("single type", model, stock(f"h100-80g:{count}"), {}))
    for model, count in (("13b", 64), ("70b", 1024)):
        out.append(Scenario("single type, pinned", model, stock(f"h100-80g:{count}"), PINNED))
        out.append(Scenario("single type, widened", model, stock(f"h100-80g:{count}"), WIDE))
        out.append(Scenario("single type, global batch", model, stock(f"h100-80g:{count}"), {"global_batch": 1536}))
    for model, fw, count in (("70b", "megatron", 1024), ("405b", "megatron", 16384), ("405b", "fsdp", 4096),
                             ("mixtral-8x7b", "megatron", 512), ("8b", "fsdp", 64)):
        out.append(Scenario(f"single type, {fw}", model, stock(f"h100-80g:{count}"), {"framework": fw}))
    for n_types in (2, 5, 10):
        inv = tuple(GpuStock(g, 256) for g in CATALOG.gpus if g.price is not None)[:n_types]
        out.append(Scenario(f"{n_types} types, cost", "70b", inv, {"objective": "cost"}))
    priced = tuple(GpuStock(g, 1024) for g in CATALOG.gpus if g.price is not None)
    out.append(Scenario("full catalog, cost", "70b", priced, {"objective": "cost"}))
    out.append(Scenario("full catalog, gpus", "405b", priced, {}))
    out.append(Scenario("20 types, cost", "70b", twenty_types(1024), {"objective": "cost"}))
    out.append(Scenario("20 types, cost, 16k each", "405b", twenty_types(16384), {"objective": "cost"}))
    out.append(Scenario("full catalog, megatron", "405b", priced, {"framework": "megatron"}))
    for name, model, inv, options in (
        ("lora", "70b", stock("h100-80g:8"), {"mode": "lora"}),
        ("qlora", "7b", stock("rtx4090:1"), {"mode": "qlora"}),
        ("qlora, fsdp", "405b", stock("a100-80g:64"), {"mode": "qlora", "framework": "fsdp"}),
        ("finetune", "8b", stock("h100-80g:64"), {"mode": "finetune"}),
        ("infer", "70b", stock("h100-80g:8"), {"mode": "infer", "context": 32768, "batch": 32}),
        ("infer, full catalog, cost", "405b", priced, {"mode": "infer", "objective": "cost", "context": 8192, "batch": 64}),
        ("run, time", "70b", stock("a100-80g:512,h100-80g:256"), {"objective": "time", "tokens": "2T"}),
        ("run, cost, deadline", "70b", priced, {"objective": "cost", "tokens": "2T", "deadline": "30d"}),
        ("run, megatron, time", "405b", stock("h100-80g:16384"), {"objective": "time", "tokens": "15T", "framework": "megatron"}),
        ("procurement", "405b", tuple(GpuStock(g, 16384) for g in CATALOG.gpus if g.price is not None),
         {"objective": "cost", "tokens": "15T", "deadline": "90d", "framework": "megatron"}),
    ):
        out.append(Scenario(f"{name}", model, inv, options))
    return out


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def plan_once(request: Request, top: int) -> list[tuple[int, int]]:
    space = build_space(request)
    cands = find_candidates(space)
    result = solve(cands, top, 30.0)
    return [(int(cands.index[c.candidate]), c.dp) for c in result.choices]


def cli_seconds(repeats: int = 5) -> float:
    cmd = [sys.executable, "-m", "planner", "--model", "13b", "--gpus", "a100-40g:8"]
    subprocess.run(cmd, capture_output=True, check=False)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    rows = []
    for sc in scenarios():
        request = sc.request()
        space = build_space(request)
        size = oracle.space_size(space)
        solver_s, got = median_time(lambda r=request: plan_once(r, 1), 5)
        solver5_s, _ = median_time(lambda r=request: plan_once(r, 5), 3)
        oracle_s, expected = median_time(lambda s=space: oracle.best(s, 1), 1 if size > 10**6 else 3)
        agree = got == [(r.knobs_index, r.dp) for r in expected]  # type: ignore[union-attr]
        inv = ",".join(f"{s.gpu.id}:{s.count}" for s in sc.inventory)
        rows.append({
            "scenario": sc.name, "model": sc.model, "gpu_types": len(sc.inventory),
            "gpus": sum(s.count for s in sc.inventory), "inventory": inv if len(inv) < 60 else f"{len(sc.inventory)} types",
            "options": " ".join(f"{k}={v}" for k, v in sc.options.items()), "space_configs": size,
            "tuples": len(space.grid), "solver_s": round(solver_s, 4), "solver_top5_s": round(solver5_s, 4),
            "oracle_s": round(oracle_s, 4), "oracle_over_solver": round(oracle_s / solver_s, 1), "same_optimum": agree,
        })
        r = rows[-1]
        print(f"{r['scenario']:26} {r['model']:13} {r['inventory']:22} configs {size:>11,}  solver {solver_s:.3f}s "
              f"(top5 {solver5_s:.3f}s)  oracle {oracle_s:.3f}s  x{r['oracle_over_solver']:<7} same={agree}", flush=True)
    cli_s = cli_seconds()
    RESULTS.mkdir(exist_ok=True)
    header = (f"# planner {planner.__version__}, ortools {ortools.__version__}, python {platform.python_version()}, "
              f"{platform.machine()} {os.cpu_count()} cores, {date.today().isoformat()}; "
              f"CLI end to end (plan --model 13b --gpus a100-40g:8, median of 5): {cli_s:.3f} s")
    write_results(RESULTS / "solver_bench.csv", [header], rows)
    print(header)
    single = [r["solver_s"] for r in rows if r["gpu_types"] == 1]
    catalog = [r["solver_s"] for r in rows if r["gpu_types"] >= 18]
    print(f"single-type plans: max {max(single):.3f} s (target < 0.3 s); full-catalog: max {max(catalog):.3f} s (target < 3 s); "
          f"CLI {cli_s:.3f} s (target < 1.5 s); all optima equal the oracle's: {all(r['same_optimum'] for r in rows)}")
    _plot(rows)
    return 0 if all(r["same_optimum"] for r in rows) else 1


def _plot(rows: list[dict[str, object]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plot]'): no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    size = [r["space_configs"] for r in rows]
    ax.scatter(size, [r["oracle_s"] for r in rows], label="oracle (exhaustive numpy)", marker="x", color="tab:red")
    ax.scatter(size, [r["solver_s"] for r in rows], label="planner (DP thresholds + CP-SAT), top 1", color="tab:blue")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("configurations in the space (tuples x allowed DP)")
    ax.set_ylabel("seconds (median)")
    ax.axhline(0.3, color="grey", linestyle=":", linewidth=1)
    ax.text(size[0], 0.32, "0.3 s single-type target", fontsize=8, color="grey")
    ax.set_title(f"planner {planner.__version__}: solve time against space size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "solver_bench.png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())
