"""Model states per GPU: weights, gradients, optimizer states, sharding buffers,
and what CPU offload moves off the GPU. Integer bytes, numpy-vectorized.

Where the states live depends on the framework (see `Framework`):
- DeepSpeed ZeRO, mixed precision: 16-bit weights and gradients, fp32 master
  weights, optimizer states and fp32 gradient partitions. ZeRO-3 matches its
  own estimator (`estimate_zero3_model_states_mem_needs`, DeepSpeed docs
  "Memory Requirements"): 18P/N + 4 x largest layer; its ZeRO-2 estimate
  (4P + 16P/N) assumes every 16-bit gradient alive, where stage 2 keeps only
  its partition (DeepSpeed docs, ZeRO stage 2).
- PyTorch DDP/FSDP with autocast: fp32 parameters and gradients are the
  masters, the optimizer holds only its moments; 16-bit copies for compute
  (autocast's saved casts under DDP, the unsharded parameters under
  SHARD_GRAD_OP, gathered units under FULL_SHARD); DDP keeps gradient buckets
  the size of the gradients (gradient_as_bucket_view=False, PyTorch's default).
- Megatron-LM: 16-bit weights, an fp32 main-gradient buffer, fp32 master and
  states sharded over DP by the distributed optimizer: 18 bytes per
  parameter, 6 + 12/DP with it (Megatron-LM docs, distributed optimizer).
Seed accounting is the ZeRO paper's (Rajbhandari et al. 2020, Fig. 1):
2P + 2P + K*P with K = 12, split over DP by the ZeRO stage, for every framework.

TP splits matrices, PP splits layers (the first stage also holds the
embedding, the last the final norm and LM head), ZeRO/FSDP shard over DP x CP.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from planner.architecture import ParamCounts, block_params_per_ep_rank
from planner.grid import IntArray, KnobArrays, ceil_div
from planner.specs import OFFLOADS, OPTIMIZERS, PRECISIONS, Accounting, Framework, Model, Offload, Optimizer, Precision


def _table(values: dict, order: tuple) -> IntArray:
    return np.array([values[v] for v in order], dtype=np.int64)


MIXED = _table({p: int(p.value.endswith("-mixed")) for p in Precision}, PRECISIONS)
# Working weights: fp32 4, 16-bit 2, fp8-mixed 2 + the fp8 copy Transformer Engine caches (seed 001: 4P / 2P / 2P).
WEIGHT_BYTES_X2 = _table(  # doubled so fp8's 3 bytes and the rest stay integers
    {Precision.FP32: 8, Precision.FP16: 4, Precision.BF16: 4, Precision.FP16_MIXED: 4, Precision.BF16_MIXED: 4, Precision.FP8_MIXED: 6},
    PRECISIONS,
)
# Gradients in the working dtype: fp32 4, otherwise 2 (seed 001: fp16 mixed precision keeps fp16 gradients).
GRAD_BYTES = _table({p: 4 if p is Precision.FP32 else 2 for p in Precision}, PRECISIONS)
# Optimizer states follow the master weights: fp32, or 16-bit under pure fp16/bf16
# (torch optimizers allocate states like the parameter).
STATE_BYTES = _table({p: 2 if p in (Precision.FP16, Precision.BF16) else 4 for p in Precision}, PRECISIONS)
# Full-width states per parameter: AdamW m and v; SGD and Lion (Chen et al. 2023) one momentum.
STATES_PER_PARAM = _table(
    {Optimizer.ADAMW: 2, Optimizer.ADAMW_8BIT: 0, Optimizer.SGD_MOMENTUM: 1, Optimizer.SGD: 0, Optimizer.ADAFACTOR: 0, Optimizer.LION: 1},
    OPTIMIZERS,
)
_ADAMW_8BIT = OPTIMIZERS.index(Optimizer.ADAMW_8BIT)
_ADAFACTOR = OPTIMIZERS.index(Optimizer.ADAFACTOR)
_ON_GPU = OFFLOADS.index(Offload.NONE)
_PARAMS_OFF = OFFLOADS.index(Offload.PARAMS)
FP32 = 4
DS_REDUCE_BUCKET_ELEMENTS = 500_000_000  # DeepSpeed's default reduce_bucket_size


class Stage(Enum):
    """The pipeline stage whose memory is computed (the same stage when PP = 1)."""

    FIRST = "first"
    LAST = "last"


@dataclass(frozen=True)
class States:
    weights: IntArray
    gradients: IntArray
    optimizer: IntArray
    buffers: IntArray
    cpu: IntArray  # offloaded to CPU memory, per GPU (not part of the GPU total)


def stage_layers(model: Model, k: KnobArrays) -> IntArray:
    """Transformer blocks on the fullest pipeline stage: ceil(L / PP)."""
    return ceil_div(model.num_layers, k.pp)


@dataclass(frozen=True)
class Params:
    """Parameters of one GPU before DP sharding: `all` counts routed experts in
    full, `local` only this rank's 1/EP of them (what stays when a component is
    not sharded; sharded over DP x CP, experts and dense split alike, since the
    expert-data-parallel group is DP x CP / EP)."""

    all: IntArray
    local: IntArray


def params_on_gpu(counts: ParamCounts, model: Model, k: KnobArrays, stage: Stage) -> Params:
    """Parameters one GPU holds before any DP sharding: its stage's blocks, the
    embedding on the first stage, the final norm and LM head on the last (a
    tied head keeps its own copy of the embedding there, as Megatron does);
    matrices split by TP (Megatron-LM Sec. 3), vectors replicated; routed
    experts split by EP."""
    whole = k.pp == 1
    layers = stage_layers(model, k)
    sharded = layers * counts.block_sharded
    replicated = layers * counts.block_replicated
    if stage is Stage.FIRST:
        sharded = sharded + counts.embedding_sharded
        replicated = replicated + counts.embedding_replicated
    else:
        head = counts.head_sharded or counts.embedding_sharded
        sharded = sharded + head
        replicated = replicated + counts.final_norm
    exact = ceil_div(counts.tp_sharded, k.tp) + counts.replicated
    every = np.where(whole, exact, ceil_div(sharded, k.tp) + replicated)
    experts = ceil_div(np.where(whole, counts.routed_experts, layers * counts.block_routed_experts), k.tp)
    return Params(all=every, local=every - experts + ceil_div(experts, k.ep))


def _bytes(prm: Params, bytes_x2: IntArray | int, k: KnobArrays, min_stage: int) -> IntArray:
    """prm x bytes (given doubled), split over DP x CP from ZeRO stage `min_stage` on."""
    sharded = ceil_div(prm.all * bytes_x2, 2 * k.shards)
    return np.where(k.zero_stage >= min_stage, sharded, ceil_div(prm.local * bytes_x2, 2))


def optimizer_state_bytes(counts: ParamCounts, params: IntArray, k: KnobArrays, accounting: Accounting) -> IntArray:
    """The optimizer's own states for `params` parameters, unsharded (no master copy).

    AdamW 2 x 4 B, SGD momentum and Lion 4 B, plain SGD 0; 16-bit under pure
    fp16/bf16. 8-bit AdamW (Dettmers et al. 2022, bitsandbytes): two 1-byte
    states plus an fp32 absmax per 256-element block and state, fp32 states
    for tensors under 4096 elements (the seed takes a flat 2 B). Adafactor
    (Shazeer & Stern 2018) without momentum: factored row/column moments.
    Shape-dependent states scale with the share of parameters held.
    """
    state = STATE_BYTES[k.precision]
    plain = params * STATES_PER_PARAM[k.optimizer] * state
    large = counts.total - counts.bnb_small
    bnb = 2 * (large + FP32 * counts.bnb_blocks + FP32 * counts.bnb_small)
    if accounting is Accounting.SEED:
        bnb = 2 * counts.total
    shaped = np.where(k.optimizer == _ADAMW_8BIT, bnb, np.where(k.optimizer == _ADAFACTOR, counts.adafactor_state * state, 0))
    share = params / counts.total  # float: the exact product overflows int64 for large models
    return plain + np.ceil(shaped * share).astype(np.int64)


def _optimizer(counts: ParamCounts, prm: Params, k: KnobArrays, accounting: Accounting, master: IntArray) -> IntArray:
    """Master copy (`master` bytes per parameter) plus optimizer states, split over DP x CP from ZeRO-1 on."""
    sharded = ceil_div(prm.all * master + optimizer_state_bytes(counts, prm.all, k, accounting), k.shards)
    local = prm.local * master + optimizer_state_bytes(counts, prm.local, k, accounting)
    return np.where(k.zero_stage >= 1, sharded, local)


def _seed(counts: ParamCounts, prm: Params, k: KnobArrays) -> States:
    weights = _bytes(prm, WEIGHT_BYTES_X2[k.precision], k, 3)
    grads = _bytes(prm, 2 * GRAD_BYTES[k.precision], k, 2)
    opt = _optimizer(counts, prm, k, Accounting.SEED, FP32 * MIXED[k.precision])
    off = k.offload != _ON_GPU
    zero = np.zeros_like(prm.all)
    return States(weights, grads, np.where(off, 0, opt), zero, np.where(off, opt, 0))


def _deepspeed(counts: ParamCounts, prm: Params, k: KnobArrays, bf16_accumulation: bool = False) -> States:
    """DeepSpeed ZeRO (stage_1_and_2.py, stage3.py), mixed precision:
    ZeRO-0/1 keep every 16-bit gradient until the step, ZeRO-2 keeps only its
    partition after each bucket is reduced, ZeRO-3 gathers the 16-bit
    parameters and gradients of one layer at a time; the optimizer works on
    fp32 gradient partitions (whole without ZeRO); gradients reduce through a
    bucket of reduce_bucket_size = 5e8 elements (DeepSpeed's default).
    With offload the fp32 partitions, master weights and states live on the
    CPU and gradients leave the GPU bucket by bucket. `bf16_accumulation`:
    DeepSpeed's BF16_Optimizer (bf16 with ZeRO-0/1, Megatron-DeepSpeed)
    accumulates every gradient into a full fp32 buffer instead."""
    mixed = MIXED[k.precision] == 1
    z = k.zero_stage
    offloaded = k.offload != _ON_GPU
    weights = _bytes(prm, WEIGHT_BYTES_X2[k.precision], k, 3)
    half = np.where(z <= 1, prm.local * GRAD_BYTES[k.precision], _bytes(prm, 2 * GRAD_BYTES[k.precision], k, 2))
    half_grads = np.where(z <= 2, half, 0)
    fp32_grads = np.where(mixed, _bytes(prm, 2 * FP32, k, 1), 0)
    grads = np.where(offloaded, 0, half_grads + fp32_grads)
    if bf16_accumulation:
        bf16_opt = (k.precision == PRECISIONS.index(Precision.BF16_MIXED)) & (z <= 1) & ~offloaded
        grads = np.where(bf16_opt, prm.local * FP32, grads)
    opt = _optimizer(counts, prm, k, Accounting.FULL, FP32 * MIXED[k.precision])
    bucket = np.where((z >= 1) & (z <= 2), np.minimum(prm.local, DS_REDUCE_BUCKET_ELEMENTS) * GRAD_BYTES[k.precision], 0)
    # ZeRO-3 gathers a layer's 16-bit parameters and gradients: 4 x the largest layer (DeepSpeed estimator).
    largest = ceil_div(counts.largest_tensor, k.tp)
    gathered = np.where(z >= 3, largest * (ceil_div(WEIGHT_BYTES_X2[k.precision], 2) + GRAD_BYTES[k.precision]), 0)
    params_off = k.offload == _PARAMS_OFF
    cpu = np.where(offloaded, opt + fp32_grads + np.where(mixed, 0, half_grads), 0) + np.where(params_off, weights, 0)
    return States(np.where(params_off, 0, weights), grads, np.where(offloaded, 0, opt), bucket + gathered, cpu)


def _fsdp(counts: ParamCounts, prm: Params, k: KnobArrays, block: IntArray, root: IntArray) -> States:
    """PyTorch DDP/FSDP with autocast (see the module docstring); ZeRO stage 0 is
    DDP, 1 DDP with a sharded optimizer, 2 SHARD_GRAD_OP, 3 FULL_SHARD.

    DDP keeps whole parameters and, under autocast, their 16-bit casts. FSDP
    shards the parameters from stage 2 on; SHARD_GRAD_OP (and FULL_SHARD with
    pipeline stages, torchtitan's reshard_after_forward = not pp_enabled) keeps
    an unsharded copy in the compute dtype from forward to backward. FULL_SHARD
    gathers the unit in use and the prefetched one, and keeps the root unit
    (embedding, final norm, head) gathered through backward; a unit's
    gradients (compute dtype) and their fp32 reduce-scatter input live while
    the previous unit's reduce-scatter is still in flight. Checked against
    FSDP2 on the CPU with gloo (bench/dist_peak.py)."""
    mixed = MIXED[k.precision] == 1
    z = k.zero_stage
    master = np.where(mixed, 2 * FP32, WEIGHT_BYTES_X2[k.precision])  # the parameters themselves, doubled
    compute = np.where(mixed, ceil_div(WEIGHT_BYTES_X2[k.precision], 2), 0)  # autocast's 16-bit copies under DDP
    grad = np.where(mixed, FP32, GRAD_BYTES[k.precision])
    unit_compute = np.where(mixed, compute, ceil_div(master, 2))  # a gathered parameter in the compute dtype
    sharded_weights = _bytes(prm, master, k, 2)
    kept = np.where(z <= 1, compute, np.where((z == 2) | (k.pp > 1), unit_compute, 0))
    weights = sharded_weights + prm.local * kept
    ddp_buckets = np.where((z <= 1) & (k.shards > 1), prm.local * grad, 0)  # no DDP wrapper in a single process
    # with pipeline stages the stage accumulates unsharded 16-bit gradients across micro-batches
    pp_grads = np.where((z >= 2) & (k.pp > 1), prm.local * np.where(mixed, compute, grad), 0)
    sharded_grads = _bytes(prm, 2 * grad, k, 2)
    grads = sharded_grads + ddp_buckets + pp_grads
    opt = _optimizer(counts, prm, k, Accounting.FULL, np.zeros_like(grad))
    gathered = np.where(z >= 3, (2 * block + root) * unit_compute, 0)
    unit_grads = np.where(z >= 2, block * (unit_compute + 2 * grad), 0)
    params_off = k.offload == _PARAMS_OFF  # FSDP CPUOffload: parameters, gradients and optimizer on CPU
    cpu = np.where(params_off, sharded_weights + sharded_grads + opt, 0)
    return States(
        np.where(params_off, weights - sharded_weights, weights),
        np.where(params_off, 0, grads),
        np.where(params_off, 0, opt),
        gathered + unit_grads,
        cpu,
    )


def _root_params(counts: ParamCounts, k: KnobArrays, stage: Stage) -> IntArray:
    """Parameters outside the transformer blocks on this stage (FSDP's root unit): the
    embedding on the first stage, the final norm and head (a tied head's own copy of the
    embedding) on the last, all of them without pipeline stages."""
    head = (counts.head_sharded or counts.embedding_sharded) + counts.final_norm
    staged = counts.embedding if stage is Stage.FIRST else head
    return np.where(k.pp == 1, counts.embedding + counts.head_sharded + counts.final_norm, staged)


def _megatron(counts: ParamCounts, prm: Params, k: KnobArrays, fp32_main_grads: bool) -> States:
    """Megatron-LM: 16-bit weights, an fp32 main-gradient buffer (Megatron-Core with
    grad_reduce_in_fp32 off: one in the 16-bit parameter dtype), the distributed optimizer as ZeRO-1."""
    mixed = (MIXED[k.precision] == 1) & fp32_main_grads
    weights = ceil_div(prm.local * WEIGHT_BYTES_X2[k.precision], 2)
    grads = prm.local * np.where(mixed, FP32, GRAD_BYTES[k.precision])  # the main-gradient buffer
    opt = _optimizer(counts, prm, k, Accounting.FULL, FP32 * MIXED[k.precision])
    off = k.offload != _ON_GPU
    return States(weights, grads, np.where(off, 0, opt), np.zeros_like(weights), np.where(off, opt, 0))


def model_states(
    counts: ParamCounts, model: Model, k: KnobArrays, framework: Framework, accounting: Accounting, stage: Stage,
    fp32_main_grads: bool = True,
) -> States:
    """Weights, gradients, optimizer states, sharding buffers and CPU-offloaded bytes of one GPU."""
    prm = params_on_gpu(counts, model, k, stage)
    if accounting is Accounting.SEED:
        return _seed(counts, prm, k)
    if framework.zero_states:
        return _deepspeed(counts, prm, k, bf16_accumulation=framework is Framework.MEGATRON_DEEPSPEED)
    if framework is Framework.FSDP:
        block = ceil_div(block_params_per_ep_rank(model, k.ep), k.tp)
        return _fsdp(counts, prm, k, block, ceil_div(_root_params(counts, k, stage), k.tp))
    return _megatron(counts, prm, k, fp32_main_grads)
