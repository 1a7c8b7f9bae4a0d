"""Per-GPU peak memory of a training step, by component, in integer bytes.

Composes model states (`planner.states`) and activations
(`planner.activations`) for the pipeline stage that needs the most, and
adds the margins. One call evaluates one configuration or a whole grid.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from planner.activations import activation_bytes, logits_bytes
from planner.adapters import adapter_states
from planner.architecture import ParamCounts
from planner.grid import IntArray, KnobArrays, ceil_div
from planner.inference import seed_inference_total_bytes
from planner.profiles import profile_of
from planner.serving import kv_cache_bytes, sampler_logits_bytes, serving_weights_bytes, workspace_bytes
from planner.specs import Accounting, Margins, Mode, Model, Workload
from planner.states import Stage, model_states


@dataclass(frozen=True)
class MemoryBreakdown:
    """Per-GPU bytes by component; `total` is what must fit in usable memory.
    `cpu` is what offload keeps in host memory for this GPU and `cached` the
    allocator's releasable cache at the peak (neither in `total`)."""

    weights: IntArray  # adapter runs: frozen base + adapters
    gradients: IntArray
    optimizer: IntArray
    activations: IntArray  # serving: the prefill workspace
    logits: IntArray
    zero_buffers: IntArray
    kv_cache: IntArray  # serving only
    fragmentation: IntArray
    overhead: IntArray
    cpu: IntArray
    cached: IntArray  # cached blocks the allocator releases and retries before failing (not in `total`)

    @property
    def allocated(self) -> IntArray:
        """Peak bytes held by PyTorch tensors (what torch.cuda.max_memory_allocated reports)."""
        return (
            self.weights + self.gradients + self.optimizer + self.activations + self.logits + self.zero_buffers + self.kv_cache
        )

    @property
    def reserved(self) -> IntArray:
        """Typical peak of the caching allocator's pool (torch.cuda.max_memory_reserved): allocated,
        the slack it cannot hand out, and the cache it keeps while memory is plentiful."""
        return self.allocated + self.fragmentation + self.cached

    @property
    def device_used(self) -> IntArray:
        """What nvidia-smi shows for the process at the peak: the reserved pool and memory outside it."""
        return self.reserved + self.overhead

    @property
    def total(self) -> IntArray:
        """What the GPU must hold: allocated, the slack the allocator cannot hand out, and memory
        outside the allocator. Cached blocks are not counted: the allocator frees them and retries
        before it reports out of memory."""
        return self.allocated + self.fragmentation + self.overhead

    def components(self) -> dict[str, IntArray]:
        """The GPU components, which sum to `total` (cpu and cached excluded)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("cpu", "cached")}

    def select(self, mask: IntArray, other: MemoryBreakdown) -> MemoryBreakdown:
        """Rows of `self` where mask, else of `other`."""
        return MemoryBreakdown(**{f.name: np.where(mask, getattr(self, f.name), getattr(other, f.name)) for f in fields(self)})


def _serving(model: Model, counts: ParamCounts, workload: Workload, k: KnobArrays, stage: Stage) -> MemoryBreakdown:
    """Weights, KV cache, workspace, sampler logits; seed accounting: weights x 1.2 (seed 001)."""
    zero = np.zeros_like(k.tp)
    weights = serving_weights_bytes(counts, model, k, workload.accounting, stage)
    if workload.accounting is Accounting.SEED:
        rest = seed_inference_total_bytes(weights) - weights
        return MemoryBreakdown(weights, zero, zero, rest, zero, zero, zero, zero, zero, zero, zero)
    last = (k.pp == 1) | (stage is Stage.LAST)
    return MemoryBreakdown(
        weights=weights,
        gradients=zero,
        optimizer=zero,
        activations=workspace_bytes(model, workload, k),
        logits=np.where(last, sampler_logits_bytes(model, k), 0),
        zero_buffers=zero,
        kv_cache=kv_cache_bytes(model, workload, k),
        fragmentation=zero,
        overhead=zero,
        cpu=zero,
        cached=zero,
    )


def _training(model: Model, counts: ParamCounts, workload: Workload, k: KnobArrays, stage: Stage) -> MemoryBreakdown:
    if workload.mode.adapters:
        states = adapter_states(counts, model, workload, k, stage)
    else:
        main_grads = profile_of(workload.profile, workload.framework).fp32_main_grads
        states = model_states(counts, model, k, workload.framework, workload.accounting, stage, main_grads)
    zero = np.zeros_like(k.tp)
    return MemoryBreakdown(
        weights=states.weights,
        gradients=states.gradients,
        optimizer=states.optimizer,
        activations=activation_bytes(model, workload, k, stage),
        logits=logits_bytes(model, workload, k, stage),
        zero_buffers=states.buffers,
        kv_cache=zero,
        fragmentation=zero,
        overhead=zero,
        cpu=states.cpu,
        cached=zero,
    )


def _stage(model: Model, counts: ParamCounts, workload: Workload, k: KnobArrays, stage: Stage) -> MemoryBreakdown:
    build = _serving if workload.mode is Mode.INFER else _training
    b = build(model, counts, workload, k, stage)
    if workload.accounting is Accounting.SEED:
        return b
    m = workload.margins
    return MemoryBreakdown(
        **{
            **{f.name: getattr(b, f.name) for f in fields(b)},
            "fragmentation": ceil_div(b.allocated * round(m.fragmentation_pct * 100), 10_000),
            "cached": ceil_div(b.allocated * round(m.cached_pct * 100), 10_000),
            "overhead": _overhead_bytes(m, k),
        }
    )


def _overhead_bytes(m: Margins, k: KnobArrays) -> IntArray:
    """Memory outside the allocator per GPU: the single-GPU figure for one-GPU jobs (no NCCL communicators)."""
    single = m.overhead_bytes if m.single_gpu_overhead_bytes is None else m.single_gpu_overhead_bytes
    return np.where(k.tp * k.pp * k.cp * k.dp == 1, single, m.overhead_bytes).astype(np.int64)


def breakdown(model: Model, counts: ParamCounts, workload: Workload, k: KnobArrays) -> MemoryBreakdown:
    """Per-GPU peak memory of a training step, by component.

    The peak is taken at the start of backward: model states, the
    activations held (the first pipeline stage holds the micro-batches in
    flight, the last the LM head and logits; the larger of the two is
    reported), ZeRO/FSDP buffers. Fused optimizers (no per-step temporaries)
    are assumed. Fragmentation is the allocator's reserved-but-unallocated
    slack it cannot hand out, as a share of the allocated peak; overhead is
    memory outside the allocator (CUDA context, cuBLAS and NCCL workspaces);
    both come from the stack's profile (`planner.profiles`). Seed accounting
    has neither.
    """
    first = _stage(model, counts, workload, k, Stage.FIRST)
    if not (k.pp > 1).any():
        return first
    last = _stage(model, counts, workload, k, Stage.LAST)
    return first.select(first.total >= last.total, last)
