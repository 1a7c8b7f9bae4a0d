"""Peak memory of short PyTorch training steps (CUDA, or the CPU as a proxy) against the planner's prediction.

Builds Hugging Face Llama- and GPT-style causal LMs from a config with random
weights (no downloads), runs short training steps per configuration (the
first allocates optimizer states; peaks are read after it) and records the
peak allocated bytes, next to what `planner.memory.breakdown` predicts for
the same configuration under the `fsdp` framework profile (plain PyTorch:
fp32 parameters with autocast, or pure 16-bit; one process, so no DDP
buckets; `bench/peak_specs.py`, torch-free, so tests recompute it). Sweeps
precision, optimizer, recomputation, attention kernel, micro-batch and
sequence length.

    # on a CUDA machine (torch and transformers installed; the planner importable):
    python bench/gpu_peak.py                    # writes bench/results/gpu_peak.csv
    # anywhere: CPU-sized models, peak allocated CPU bytes (about 20 minutes on 2 cores)
    python bench/gpu_peak.py --device cpu --cross-check   # writes bench/results/cpu_peak.csv
    python bench/gpu_peak.py --device cpu --smoke         # toy sizes (checks the script)

CUDA: torch.cuda.max_memory_allocated / max_memory_reserved over steps 2 and 3.

CPU: the peak of live tensor bytes in step 2, from the profiler's memory
timeline (torch.profiler with profile_memory, record_shapes and with_stack;
torch.profiler._memory_profiler.MemoryProfile): every allocation through
PyTorch's CPU allocator that belongs to a tensor storage, with the tensors
that existed before the step (parameters, optimizer states, the batch) counted
from its start; the same events split by the profiler's categories
(parameter, optimizer state, gradient, activation, temporary, autograd detail
= gradients of activations, input), recorded at the peak (`at_peak_*`),
with the step phase it falls in. Every later step allocates and frees the
same tensors, so step 2 is the peak of steps 2 and 3. With --cross-check,
step 3 is measured again by a TorchDispatchMode that counts each storage an
operator returns once, from its creation until it is freed
(weakref.finalize), the same baseline on top (`tracked_allocated_bytes`);
it misses allocations made inside a kernel that no operator returns.
How the CPU figure differs from CUDA's max_memory_allocated:
- no CUDA context, no cuBLAS/cuDNN workspaces, no caching-allocator rounding
  (CUDA rounds each block up to 512 B and splits large segments); oneDNN
  scratch memory outside PyTorch's allocator is not seen;
- CPU autocast has its own op lists: linear/matmul/bmm/SDPA run in bf16 and
  the bf16 weight casts are cached for the step (as on CUDA), but
  layer_norm, softmax and log_softmax keep bf16 inputs in bf16 on the CPU,
  where CUDA autocast runs them in fp32; embeddings stay fp32 on both;
- SDPA picks the CPU flash-attention kernel
  (aten::_scaled_dot_product_flash_attention_for_cpu: output plus an fp32
  log-sum-exp, like CUDA's flash/efficient kernels, no s x s scores);
- AdamW and SGD use their fused kernels on both devices (fused=True);
  Adafactor has none and takes torch's default: the per-tensor loop on the
  CPU, foreach (larger step temporaries) on CUDA;
- Hugging Face's default use_cache=True builds a DynamicCache in training
  too (not under recompute): its concatenated copies of k and v stay alive
  with the step (the `input` category at the peak), on CUDA as well;
- seconds_per_step is the profiled step's wall time on the CPU.

CPU architectures: llama-cpu and gpt2-cpu (4 layers, vocabularies of
32000/50257: the logits dominate) sweep every knob both ways around
bf16-mixed/AdamW/no recompute/SDPA at 1 x 512 tokens; llama-deep and
gpt2-deep (8 layers, vocabulary 2048, 4 x 1024 tokens: the activations
dominate, as at GPU scale) sweep precision, recompute and attention.

Predicted allocated is compared with measured allocated (the model's
components, no margins); predicted reserved (CUDA only) adds the
fragmentation margin (`--fragmentation-pct`, default the planner's). A
negative error is an under-prediction: the unsafe direction.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import platform
import sys
import time
import weakref
from datetime import date
from pathlib import Path

import torch
import torch.utils._pytree as pytree
import transformers
from peak_specs import ARCHS, CPU_ARCHS, CPU_DEEP_ARCHS, SMOKE_ARCHS, Arch, predict
from results_csv import write_results
from torch.profiler import ProfilerActivity, profile, record_function
from torch.profiler._memory_profiler import Action, Category, TensorKey
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from planner import __version__
from planner.request import DEFAULT_FRAGMENTATION_PCT
from planner.specs import Optimizer, Precision, Recompute

RESULTS = Path(__file__).parent / "results" / "gpu_peak.csv"
CPU_RESULTS = Path(__file__).parent / "results" / "cpu_peak.csv"


PRECISIONS = (Precision.BF16_MIXED, Precision.BF16, Precision.FP32)
OPTIMIZERS = (Optimizer.ADAMW, Optimizer.SGD_MOMENTUM, Optimizer.ADAFACTOR)
RECOMPUTES = (Recompute.NONE, Recompute.FULL)
ATTENTIONS = ("sdpa", "eager")
SHAPES = ((1, 1024), (4, 1024), (1, 4096))  # (micro-batch, sequence length)
CPU_SHAPES = ((1, 512), (4, 256), (1, 1024))
CPU_DEEP_SHAPE = (4, 1024)
SMOKE_SHAPES = ((2, 64),)
CPU_SMOKE_SHAPES = ((2, 64), (1, 128))


def build(arch: Arch, attention: str, max_len: int) -> torch.nn.Module:
    if arch.gated:
        cfg = LlamaConfig(hidden_size=arch.hidden, intermediate_size=arch.ffn, num_hidden_layers=arch.layers,
                          num_attention_heads=arch.heads, num_key_value_heads=arch.kv_heads, vocab_size=arch.vocab,
                          max_position_embeddings=max_len, tie_word_embeddings=False)
        cfg._attn_implementation = attention
        return LlamaForCausalLM(cfg)
    cfg = GPT2Config(n_embd=arch.hidden, n_layer=arch.layers, n_head=arch.heads, n_inner=arch.ffn, vocab_size=arch.vocab,
                     n_positions=max_len, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    cfg._attn_implementation = attention
    return GPT2LMHeadModel(cfg)


def make_optimizer(name: Optimizer, params: list[torch.nn.Parameter], device: str) -> torch.optim.Optimizer:
    # Fused AdamW/SGD on both devices (the CPU has fused kernels too); Adafactor has no fused
    # kernel and takes torch's default (foreach on CUDA, the per-tensor loop on the CPU).
    fused = device in ("cuda", "cpu")
    if name is Optimizer.ADAMW:
        return torch.optim.AdamW(params, lr=1e-5, fused=fused)
    if name is Optimizer.SGD_MOMENTUM:
        return torch.optim.SGD(params, lr=1e-5, momentum=0.9, fused=fused)
    return torch.optim.Adafactor(params, lr=1e-5)


PHASES = ("forward", "backward", "optimizer", "zero_grad")


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: torch.Tensor, autocast: bool, device: str) -> None:
    with record_function("forward"), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=batch, labels=batch).loss
    with record_function("backward"):
        loss.backward()
    with record_function("optimizer"):
        opt.step()
    with record_function("zero_grad"):
        opt.zero_grad(set_to_none=True)


def setup(arch: Arch, precision: Precision, optimizer: Optimizer, recompute: Recompute, attention: str,
          micro_batch: int, seq_len: int, device: str) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor, bool]:
    torch.manual_seed(0)
    model = build(arch, attention, max(seq_len, 1024)).to(device)
    if precision is Precision.BF16:
        model = model.to(torch.bfloat16)
    if recompute is Recompute.FULL:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = make_optimizer(optimizer, list(model.parameters()), device)
    batch = torch.randint(0, arch.vocab, (micro_batch, seq_len), device=device)
    return model, opt, batch, precision is Precision.BF16_MIXED


def measure(arch: Arch, precision: Precision, optimizer: Optimizer, recompute: Recompute, attention: str,
            micro_batch: int, seq_len: int, device: str) -> tuple[int, int, float]:
    """(peak allocated, peak reserved, seconds per step) over steps 2 and 3, on CUDA."""
    model, opt, batch, autocast = setup(arch, precision, optimizer, recompute, attention, micro_batch, seq_len, device)
    step(model, opt, batch, autocast, device)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(2):
        step(model, opt, batch, autocast, device)
    torch.cuda.synchronize()
    allocated, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    seconds = (time.perf_counter() - start) / 2
    del model, opt, batch
    torch.cuda.empty_cache()
    return allocated, reserved, seconds


# ---- the CPU: peak allocated bytes from the profiler's memory timeline ------------------------

CATEGORIES = ("parameter", "optimizer_state", "gradient", "activation", "temporary", "autograd_detail", "input", "unknown")


@dataclasses.dataclass(frozen=True)
class CpuPeak:
    allocated: int  # peak of live CPU tensor bytes in a step after the first (profiler memory timeline)
    at_peak: dict[str, int]  # that peak by the profiler's category (sums to `allocated`)
    phase: str  # the step phase the peak falls in
    tracked: int  # the same peak from live storages under a TorchDispatchMode (cross-check), -1 if not run
    seconds: float  # per step, profiler on


def _storages(tensors: list[torch.Tensor]) -> dict[int, torch.UntypedStorage]:
    return {t.untyped_storage().data_ptr(): t.untyped_storage() for t in tensors if t.device.type == "cpu"}


class StorageTracker(TorchDispatchMode):
    """Peak bytes of live CPU storages: the baseline storages (parameters, optimizer states, the
    batch) plus every storage an operator returns, each counted once and dropped when it is freed."""

    def __init__(self, baseline: dict[int, torch.UntypedStorage]) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0
        for st in baseline.values():
            self._add(st)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key)

    def _add(self, st: torch.UntypedStorage) -> None:
        key = id(st)  # the Python storage object lives exactly as long as the storage
        if key in self.live or st.device.type != "cpu":
            return
        self.live[key] = st.nbytes()
        self.current += st.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and not t.is_meta:
                self._add(t.untyped_storage())
        return out


def _timeline_peak(prof: profile) -> tuple[int, dict[str, int], str]:
    """Peak of the CPU memory timeline (every tensor allocation the profiler saw, pre-existing
    tensors from the start), its split by category and the phase it falls in."""
    mp = prof._memory_profile()
    phases = [(n.start_time_ns, n.end_time_ns, n.name) for n in mp._op_tree.dfs() if n.name in PHASES]
    index = {c: i for i, c in enumerate(Category)}
    sizes = [0] * (len(index) + 1)
    best, best_sizes, best_t = -1, sizes, -1

    def update(key: object, version: int, delta: int) -> None:
        category = mp._categories.get(key, version) if isinstance(key, TensorKey) else None
        sizes[index.get(category, len(index))] += delta

    for t, action, (key, version), numbytes in mp.timeline:
        if key.device.type != "cpu":
            continue
        if action in (Action.PREEXISTING, Action.CREATE):
            update(key, version, numbytes)
        elif action == Action.INCREMENT_VERSION:
            update(key, version, -numbytes)
            update(key, version + 1, numbytes)
        elif action == Action.DESTROY:
            update(key, version, -numbytes)
        if sum(sizes) > best:
            best, best_sizes, best_t = sum(sizes), list(sizes), t
    names = {Category.PARAMETER: "parameter", Category.OPTIMIZER_STATE: "optimizer_state", Category.GRADIENT: "gradient",
             Category.ACTIVATION: "activation", Category.TEMPORARY: "temporary", Category.AUTOGRAD_DETAIL: "autograd_detail",
             Category.INPUT: "input"}
    at_peak = {c: 0 for c in CATEGORIES}
    for category, i in index.items():
        at_peak[names[category]] += best_sizes[i]
    at_peak["unknown"] += best_sizes[-1]
    phase = next((name for start, end, name in phases if start <= best_t <= end), "other")
    return best, at_peak, phase


def measure_cpu(arch: Arch, precision: Precision, optimizer: Optimizer, recompute: Recompute, attention: str,
                micro_batch: int, seq_len: int, cross_check: bool) -> CpuPeak:
    """Peak allocated CPU bytes in step 2 (step 3 for the cross-check): every step after the
    first allocates and frees the same tensors, so one step is the peak over steps 2 and 3."""
    model, opt, batch, autocast = setup(arch, precision, optimizer, recompute, attention, micro_batch, seq_len, "cpu")
    step(model, opt, batch, autocast, "cpu")
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step(model, opt, batch, autocast, "cpu")
    seconds = time.perf_counter() - start
    allocated, at_peak, phase = _timeline_peak(prof)
    del prof
    tracked = -1
    if cross_check:
        states = [t for s in opt.state.values() for t in pytree.tree_leaves(s) if isinstance(t, torch.Tensor)]
        baseline = _storages([*model.parameters(), *model.buffers(), *states, batch])
        with StorageTracker(baseline) as tracker:
            del baseline
            step(model, opt, batch, autocast, "cpu")
        tracked = tracker.peak
    return CpuPeak(allocated, at_peak, phase, tracked, seconds)


def cpu_plan(archs: tuple[Arch, ...], shapes: tuple[tuple[int, int], ...]) -> list[tuple]:
    """Each knob both ways around a base (bf16-mixed, AdamW, no recompute, SDPA, the first shape):
    precision x optimizer, precision x recompute, precision x attention, recompute with eager
    attention, and the other shapes with either attention kernel."""
    base_p, base_o, base_r, base_a = Precision.BF16_MIXED, Optimizer.ADAMW, Recompute.NONE, "sdpa"
    plan: list[tuple] = []
    for arch in archs:
        configs = [(p, o, base_r, base_a, shapes[0]) for p, o in itertools.product(PRECISIONS, OPTIMIZERS)]
        configs += [(p, base_o, Recompute.FULL, base_a, shapes[0]) for p in PRECISIONS]
        configs += [(p, base_o, base_r, "eager", shapes[0]) for p in PRECISIONS]
        configs += [(base_p, base_o, Recompute.FULL, "eager", shapes[0])]
        configs += [(base_p, base_o, base_r, a, shape) for shape, a in itertools.product(shapes[1:], ATTENTIONS)]
        plan += [(arch, *c) for c in configs]
    return plan


def cpu_deep_plan(archs: tuple[Arch, ...], shape: tuple[int, int]) -> list[tuple]:
    """Activation-dominated steps: each precision with and without recompute (AdamW, SDPA), and eager attention."""
    plan = [(arch, p, Optimizer.ADAMW, r, "sdpa", shape) for arch, p, r in itertools.product(archs, PRECISIONS, RECOMPUTES)]
    return plan + [(arch, Precision.BF16_MIXED, Optimizer.ADAMW, Recompute.NONE, "eager", shape) for arch in archs]


def _error(predicted: int, measured: int) -> float | str:
    return round(100 * (predicted - measured) / measured, 2) if measured > 0 else ""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--smoke", action="store_true", help="toy sizes, a few configurations (checks the script)")
    parser.add_argument("--fragmentation-pct", type=float, default=DEFAULT_FRAGMENTATION_PCT)
    parser.add_argument("--cross-check", action="store_true",
                        help="CPU: also measure every row with the TorchDispatchMode storage tracker")
    parser.add_argument("--arch", action="append", help="CPU: only these architectures (repeatable)")
    parser.add_argument("--output", type=Path, default=None, help=f"default {RESULTS.name} or {CPU_RESULTS.name}")
    args = parser.parse_args(argv)
    cpu = args.device == "cpu"
    output = args.output or (CPU_RESULTS if cpu else RESULTS)
    if not cpu and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu (--smoke) instead", file=sys.stderr)
        return 2
    if cpu:
        torch.set_num_threads(max(torch.get_num_threads(), 1))
        if args.smoke:
            plan = cpu_plan(SMOKE_ARCHS, CPU_SMOKE_SHAPES)
        else:
            plan = cpu_plan(CPU_ARCHS, CPU_SHAPES) + cpu_deep_plan(CPU_DEEP_ARCHS, CPU_DEEP_SHAPE)
        if args.arch:
            plan = [c for c in plan if c[0].name in args.arch]
    else:
        archs, shapes = (SMOKE_ARCHS, SMOKE_SHAPES) if args.smoke else (ARCHS, SHAPES)
        plan = [c for c in itertools.product(archs, PRECISIONS, OPTIMIZERS, RECOMPUTES, ATTENTIONS, shapes)
                if not (args.smoke and c[4] != "sdpa" and c[2] is not Optimizer.ADAMW)]
    rows = []
    for arch, precision, optimizer, recompute, attention, (mb, seq) in plan:
        pred_alloc, pred_reserved = predict(arch, precision, optimizer, recompute, attention, mb, seq, args.fragmentation_pct)
        row: dict[str, object] = {
            "arch": arch.name, "precision": str(precision), "optimizer": str(optimizer), "recompute": str(recompute),
            "attention": attention, "micro_batch": mb, "seq_len": seq,
        }
        if cpu:
            peak = measure_cpu(arch, precision, optimizer, recompute, attention, mb, seq, args.cross_check)
            allocated = peak.allocated
            row |= {"measured_allocated_bytes": allocated, "predicted_allocated_bytes": pred_alloc,
                    "allocated_error_pct": _error(pred_alloc, allocated),
                    "tracked_allocated_bytes": peak.tracked if peak.tracked >= 0 else "", "peak_phase": peak.phase,
                    **{f"at_peak_{c}_bytes": v for c, v in peak.at_peak.items()},
                    "seconds_per_step": round(peak.seconds, 4)}
        else:
            try:
                allocated, reserved, seconds = measure(arch, precision, optimizer, recompute, attention, mb, seq, args.device)
            except torch.OutOfMemoryError:
                allocated = reserved = -1  # recorded as out of memory
                seconds = 0.0
                torch.cuda.empty_cache()
            row |= {"measured_allocated_bytes": allocated, "measured_reserved_bytes": reserved,
                    "predicted_allocated_bytes": pred_alloc, "predicted_reserved_bytes": pred_reserved,
                    "allocated_error_pct": _error(pred_alloc, allocated), "reserved_error_pct": _error(pred_reserved, reserved),
                    "seconds_per_step": round(seconds, 4)}
        rows.append(row)
        extra = f", tracked {peak.tracked / 2**20:8.1f} MiB, peak in {peak.phase}" if cpu else ""
        print(f"{arch.name:11} {precision!s:10} {optimizer!s:12} {recompute!s:5} {attention:5} mb{mb} s{seq}: "
              f"allocated {allocated / 2**20:8.1f} MiB, predicted {pred_alloc / 2**20:8.1f} ({row['allocated_error_pct']}%)"
              + extra, flush=True)
    where = (f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads); peak allocated = "
             "profiler memory timeline (profile_memory=True), tracked = TorchDispatchMode live storages"
             if cpu else f"{torch.cuda.get_device_name()}, {platform.machine()}")
    write_results(output, [(f"# planner {__version__}, torch {torch.__version__}, transformers {transformers.__version__}, "
                           f"{where}, {date.today().isoformat()}; error = (predicted - measured) / measured")], rows)
    errors = [r["allocated_error_pct"] for r in rows if r["allocated_error_pct"] != ""]
    print(f"{len(errors)} measured; worst under-prediction {min(errors):+.1f}%, largest over-prediction {max(errors):+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
