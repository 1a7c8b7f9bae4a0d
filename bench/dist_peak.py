"""Peak allocated CPU bytes of one rank of multi-process (gloo) training steps under DDP, ZeRO-1, FSDP2 and HSDP,
against the planner's per-GPU prediction under the `fsdp` framework profile.

Spawns `world` CPU processes (torch.multiprocessing, backend gloo, MASTER_ADDR 127.0.0.1, a free port),
each building the same Hugging Face Llama-style model from config (bench/gpu_peak.py `build`, random
weights, SDPA), wrapped as one of:

- ddp:                DistributedDataParallel (defaults: 25 MiB buckets, gradient_as_bucket_view=False),
                      fp32 parameters, bf16 autocast for bf16-mixed (planner ZeRO stage 0);
- ddp-zero1:          the same plus torch.distributed.optim.ZeroRedundancyOptimizer(AdamW) (stage 1);
- fsdp-shard-grad-op: FSDP2 fully_shard per decoder layer and on the root, reshard_after_forward=False (stage 2);
- fsdp-full-shard:    the same with reshard_after_forward=True (stage 3);
- hsdp-full-shard:    FULL_SHARD over a 2-D mesh (replicate x shard), sharding within `dp_shard` ranks
                      (stage 3 with dp_shard).
FSDP2 bf16-mixed is MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32) without autocast; fp32 is no policy.
AdamW (fused) everywhere. Each rank runs 3 steps on its own batch; rank 0 profiles steps 2 and 3 (torch.profiler,
profile_memory, record_shapes, with_stack) and reads the peak of its memory timeline, its split by the profiler's
categories at the peak and the phase it falls in (bench/gpu_peak.py `_timeline_peak`). Two steps, not one: a
tensor allocated in the step before the profile and freed in the profiled one, untouched by any op in between,
is invisible to the timeline, and FSDP2 keeps some buffers across the step boundary (one-step profiles read up
to 40 MiB lower under SHARD_GRAD_OP fp32); DDP also rebuilds its buckets in step 2's forward. Every rank is its
own process with its own allocator and profiler, so only rank 0's tensors are counted; the other ranks run the
same steps unprofiled. Each configuration runs `--repeats` times (2) in fresh processes: the highest peak is
`measured_allocated_bytes`, the lowest `measured_min_allocated_bytes`; DDP repeats to the byte, FSDP2 does not
(whether the previous step's last reduce-scatter buffers are still alive in the next forward depends on thread
timing: 413 vs 454 MiB seen for SHARD_GRAD_OP fp32). Not seen: gloo's transport buffers (not PyTorch tensors) and memory a C++ component
allocates outside PyTorch's allocator.

The profiler's data-flow graph (which assigns categories) asserts on the collectives' in-place outputs
("AssertionError: version mismatch", "duplicate outputs: NllLossBackward0"); both checks are relaxed here, so
categories are best effort (FSDP2's sharded DTensor parameters and states mostly land in `parameter` or
`unknown`), while the bytes come from the allocation events: `raw_peak_bytes` re-reads the peak from the raw
allocation events alone: equal to the timeline's in 13 of 15 rows, within 10.8 MiB in two FSDP2 rows (the
timeline's size map mis-sizes FSDP2's all-gather buffers, "Mismatch between allocation and free"). `step_start_bytes` is the timeline
at the start of step 2; `python_state_bytes` is what Python enumerates then (local parameter storages, DTensor
locals under FSDP2, optimizer states, FSDP2 unsharded parameters still allocated): equal in every row.
Wall time on 2 cores: about 16 minutes (2 runs per configuration).

    /work/torchenv/bin/python bench/dist_peak.py            # writes bench/results/dist_peak.csv
    /work/torchenv/bin/python bench/dist_peak.py --smoke    # toy model (checks the script, about 3 minutes)

(torch lives in another environment than the planner: the planner's dependencies are appended from ./.venv.)
A negative error is an under-prediction: the unsafe direction.

Findings (2026-11-23, llama-deep: 8 layers, hidden 512, vocabulary 2048, P = 24.65 M parameters, 4P = 94.0 MiB;
N = the ranks sharding; tests/test_validation_dist_peak.py holds the status):
- DDP, ZeRO-1 (+17..22% at 1 x 512, +6% at 4 x 1024; identical to the byte across runs): the peak is at the end of the forward (the loss is in it)
  or the start of the backward, where no .grad exists (zero_grad(set_to_none=True)); the planner counts the fp32
  .grad (4P) besides the buckets: the whole error. Right: the buckets (4P, the profiler's uncategorized bytes,
  exactly 94.0 MiB), AdamW states halved by ZeroRedundancyOptimizer (188.1 -> 94.0 MiB), fp32 parameters,
  and autocast's bf16 weight copies + activations + logits (169.9 predicted, 169.0 MiB measured).
- SHARD_GRAD_OP (reshard_after_forward=False): the planner's `_fsdp` shards the fp32 parameters only from
  stage 3 (`_bytes(prm, master, k, 3)`), but FSDP shards them at every stage and adds the unsharded working copy
  (param_dtype: bf16 under mixed precision, fp32 otherwise) kept from the forward to the backward. bf16-mixed:
  predicted weights 141 MiB = 4P + 2P, alive 4P/N + 2P (+ a unit's all-gather buffer) -> +32% (N = 2), +42%
  (N = 4). fp32: predicted 4P, alive 4P/N + 4P + a 10.75 MiB all-gather output -> -0.8% (N = 4), +1.9% (N = 2;
  -4.7% in an earlier run), hidden only by the sharded gradients (4P/N) and unit gradient buffers counted at a
  forward peak where none is alive.
- FULL_SHARD / HSDP: sharded fp32 parameters and states exact (step start 141.1 MiB at N = 2 and HSDP 2 x 2,
  70.5 MiB at N = 4). zero_buffers (2 units gathered + 1 unit of bf16+fp32 gradients) misses that the root unit
  (embedding + head + final norm, 4 MiB bf16) stays gathered from the loss's backward to the end of the backward
  (its post-backward waits for the embedding's gradient), beside the current and the prefetched layer, and that
  each unit's reduce-scatter allocates an fp32 input (10.75 MiB) beside its bf16 gradients and output shard;
  without recompute the peak is early in the backward, where 2 of 8 layers' gradient shards exist of the 47 MiB
  counted (+7..23%). With full recompute the peak moves late into the backward (layer 2 of 8), where 6 layers'
  gradient shards, the root, two gathered layers, a reduce-scatter and the recomputed layer coexist: -2.9%.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import socket
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from results_csv import write_results

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(ROOT))
sys.path += [str(p) for p in (ROOT / ".venv" / "lib").glob("python3*/site-packages")]

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.utils._pytree as pytree
import transformers
from dist_specs import COMPONENTS, predicted_components
from gpu_peak import CATEGORIES, _timeline_peak, build, step
from peak_specs import ARCH_BY_NAME
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import Action, DataFlowGraph, DataFlowNode, OpTree

from planner import __version__

RESULTS = ROOT / "bench" / "results" / "dist_peak.csv"


@dataclasses.dataclass(frozen=True)
class Config:
    arch: str
    layout: str
    world: int
    dp_shard: int  # HSDP: ranks sharding within a replica; 0 = all of DP
    precision: str  # bf16-mixed or fp32
    recompute: str  # none or full
    micro_batch: int
    seq_len: int


# llama-deep (bench/peak_specs.py): 8 layers, hidden 512, vocabulary 2048, 24.6 M parameters. At 1 x 512 tokens the
# model states dominate the step (what the layouts change); at 4 x 1024 the activations do.
PLAN = (
    Config("llama-deep", "ddp", 2, 0, "bf16-mixed", "none", 1, 512),
    Config("llama-deep", "ddp", 2, 0, "fp32", "none", 1, 512),
    Config("llama-deep", "ddp-zero1", 2, 0, "bf16-mixed", "none", 1, 512),
    Config("llama-deep", "ddp-zero1", 2, 0, "fp32", "none", 1, 512),
    Config("llama-deep", "fsdp-shard-grad-op", 2, 0, "bf16-mixed", "none", 1, 512),
    Config("llama-deep", "fsdp-shard-grad-op", 2, 0, "fp32", "none", 1, 512),
    Config("llama-deep", "fsdp-full-shard", 2, 0, "bf16-mixed", "none", 1, 512),
    Config("llama-deep", "fsdp-full-shard", 2, 0, "fp32", "none", 1, 512),
    Config("llama-deep", "fsdp-full-shard", 2, 0, "bf16-mixed", "full", 1, 512),
    Config("llama-deep", "ddp", 2, 0, "bf16-mixed", "none", 4, 1024),
    Config("llama-deep", "fsdp-full-shard", 2, 0, "bf16-mixed", "none", 4, 1024),
    Config("llama-deep", "fsdp-shard-grad-op", 4, 0, "bf16-mixed", "none", 1, 512),
    Config("llama-deep", "fsdp-shard-grad-op", 4, 0, "fp32", "none", 1, 512),
    Config("llama-deep", "fsdp-full-shard", 4, 0, "bf16-mixed", "none", 1, 512),
    Config("llama-deep", "hsdp-full-shard", 4, 2, "bf16-mixed", "none", 1, 512),
)
SMOKE_PLAN = tuple(dataclasses.replace(c, arch="llama-toy", micro_batch=2, seq_len=64) for c in PLAN if c.seq_len == 512)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wrap(model: torch.nn.Module, c: Config) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    mixed = c.precision == "bf16-mixed"
    if c.layout.startswith("ddp"):
        model = torch.nn.parallel.DistributedDataParallel(model)
        if c.layout == "ddp-zero1":
            from torch.distributed.optim import ZeroRedundancyOptimizer

            return model, ZeroRedundancyOptimizer(list(model.parameters()), optimizer_class=torch.optim.AdamW, lr=1e-5,
                                                  fused=True)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if c.dp_shard:
        mesh = init_device_mesh("cpu", (c.world // c.dp_shard, c.dp_shard), mesh_dim_names=("replicate", "shard"))
    else:
        mesh = init_device_mesh("cpu", (c.world,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed else MixedPrecisionPolicy()
    reshard = c.layout != "fsdp-shard-grad-op"
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _python_state_bytes(model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Bytes of the distinct storages of local parameters, FSDP2's unsharded parameters, and optimizer states."""
    tensors = [_local(p) for p in model.parameters()]
    inner = getattr(opt, "optim", opt)  # ZeroRedundancyOptimizer keeps its local optimizer in .optim
    tensors += [_local(t) for s in inner.state.values() for t in pytree.tree_leaves(s) if isinstance(t, torch.Tensor)]
    for module in model.modules():  # FSDP2: the all-gather outputs kept between steps, if any
        state = getattr(module, "_get_fsdp_state", None)
        group = state()._fsdp_param_group if state else None
        for fp in (group.fsdp_params if group else ()):
            unsharded = getattr(fp, "_unsharded_param", None)
            if unsharded is not None and unsharded.untyped_storage().nbytes() > 0:
                tensors.append(unsharded)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if t.device.type == "cpu"}
    return sum(storages.values())


def _lenient_flow_node_init(self: DataFlowNode, event: object, graph: object) -> None:
    """DataFlowNode.__init__ without its version-consistency assertion, which fails on the collectives' in-place
    outputs (c10d ops under DDP/FSDP2: "AssertionError: version mismatch"; DataFlowGraph.validate likewise:
    "AssertionError: duplicate outputs: NllLossBackward0"). Only categories depend on the data flow graph;
    the timeline's bytes come from the allocation events (`raw_peak_bytes` checks them without it)."""
    self._event, self._graph = event, graph
    self._edges = self._determine_edges()
    for key, edge in self._edges.items():
        if edge.mutated and not edge.is_allocation:
            self._graph.bump(key)


DataFlowNode.__init__ = _lenient_flow_node_init
DataFlowGraph.validate = lambda self: None


def _raw_peak_delta(prof: profile) -> int:
    """Peak of live bytes over the step relative to its start, from the raw allocation events alone (no data
    flow graph, no categories): the profiler's measurement without the memory profile's interpretation."""
    live = peak = 0
    for event in OpTree(prof.profiler.kineto_results).sorted_nodes:
        if event.typed[0] == _EventType.Allocation and event.typed[1].device.type == "cpu":
            live += event.typed[1].alloc_size
            peak = max(peak, live)
    return peak


def _step_start_bytes(prof: profile) -> int:
    """Bytes the memory timeline counts at the start of the step: tensors it saw that predate it."""
    return sum(n for _, action, (key, _), n in prof._memory_profile().timeline
               if action == Action.PREEXISTING and key.device.type == "cpu")


def worker(rank: int, c: Config, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=c.world)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // c.world))
    arch = ARCH_BY_NAME[c.arch]
    torch.manual_seed(0)
    model = build(arch, "sdpa", max(c.seq_len, 1024))
    if c.recompute == "full":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    model, opt = _wrap(model, c)
    torch.manual_seed(1 + rank)  # each rank its own batch, as in data parallelism
    batch = torch.randint(0, arch.vocab, (c.micro_batch, c.seq_len))
    autocast = c.precision == "bf16-mixed" and c.layout.startswith("ddp")
    step(model, opt, batch, autocast, "cpu")
    dist.barrier()
    if rank == 0:
        state_bytes = _python_state_bytes(model, opt)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
            for _ in range(2):
                step(model, opt, batch, autocast, "cpu")
        seconds = (time.perf_counter() - start) / 2
    else:
        for _ in range(2):
            step(model, opt, batch, autocast, "cpu")
    dist.barrier()
    if rank == 0:
        allocated, at_peak, phase = _timeline_peak(prof)
        result = {"allocated": allocated, "at_peak": at_peak, "phase": phase, "seconds": seconds,
                  "step_start": _step_start_bytes(prof), "python_state": state_bytes,
                  "raw_delta": _raw_peak_delta(prof)}
        Path(out).write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def measure(c: Config, repeats: int) -> dict:
    """The run with the highest peak of `repeats` (fresh processes each), with the lowest peak seen."""
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rank0.json"
            mp.spawn(worker, args=(c, _free_port(), str(out)), nprocs=c.world, join=True)
            runs.append(json.loads(out.read_text()))
    return max(runs, key=lambda r: r["allocated"]) | {"min_allocated": min(r["allocated"] for r in runs)}


def _error(predicted: int, measured: int) -> float:
    return round(100 * (predicted - measured) / measured, 2)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy model (checks the script)")
    parser.add_argument("--layout", action="append", help="only these layouts (repeatable)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per configuration: the highest peak is recorded, the lowest next to it (FSDP2 varies)")
    parser.add_argument("--output", type=Path, default=None, help=f"default {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    plan = [c for c in (SMOKE_PLAN if args.smoke else PLAN) if not args.layout or c.layout in args.layout]
    output = args.output or (Path(tempfile.gettempdir()) / "dist_peak_smoke.csv" if args.smoke else RESULTS)
    rows = []
    began = time.perf_counter()
    for c in plan:
        row: dict[str, object] = {"arch": c.arch, "layout": c.layout, "world_size": c.world, "dp_shard": c.dp_shard,
                                  "precision": c.precision, "optimizer": "adamw", "recompute": c.recompute,
                                  "attention": "sdpa", "micro_batch": c.micro_batch, "seq_len": c.seq_len}
        predicted = predicted_components({k: str(v) for k, v in row.items()})
        m = measure(c, args.repeats)
        row |= {"measured_allocated_bytes": m["allocated"], "predicted_allocated_bytes": predicted["allocated"],
                "allocated_error_pct": _error(predicted["allocated"], m["allocated"]),
                "repeats": args.repeats, "measured_min_allocated_bytes": m["min_allocated"], "peak_phase": m["phase"],
                **{f"at_peak_{k}_bytes": m["at_peak"][k] for k in CATEGORIES},
                "step_start_bytes": m["step_start"], "python_state_bytes": m["python_state"],
                "raw_peak_bytes": m["step_start"] + m["raw_delta"],
                **{f"predicted_{k}_bytes": predicted[k] for k in COMPONENTS},
                "seconds_per_step_profiled": round(m["seconds"], 3)}
        rows.append(row)
        print(f"{c.layout:19} w{c.world} s{c.dp_shard} {c.precision:10} {c.recompute:4} mb{c.micro_batch} s{c.seq_len}: "
              f"measured {m['allocated'] / 2**20:7.1f} MiB (min {m['min_allocated'] / 2**20:7.1f}), predicted {predicted['allocated'] / 2**20:7.1f} MiB "
              f"({row['allocated_error_pct']:+.1f}%), peak in {m['phase']}, step start {m['step_start'] / 2**20:.1f} MiB "
              f"(python {m['python_state'] / 2**20:.1f})", flush=True)
    write_results(output, [(f"# planner {__version__}, torch {torch.__version__}, transformers {transformers.__version__}, "
                           f"CPU ({platform.machine()}, {os.cpu_count()} cores), gloo, one process per rank; rank 0's peak "
                           f"allocated = profiler memory timeline of steps 2-3 of 3 (profile_memory=True), highest of "
                           f"{args.repeats} runs; FSDP = FSDP2 fully_shard; "
                           f"{date.today().isoformat()}; error = (predicted - measured) / measured; "
                           f"{time.perf_counter() - began:.0f} s wall")], rows)
    errors = [float(r["allocated_error_pct"]) for r in rows]
    print(f"{len(rows)} rows -> {output}; worst under-prediction {min(errors):+.1f}%, largest over-prediction "
          f"{max(errors):+.1f}%; {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
