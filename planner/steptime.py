"""Time of one training step per GPU, numpy-vectorized over knob arrays.

A step is the global batch: `m` micro-batches per pipeline, m = G / (mb x DP)
with a global batch of G sequences (one micro-batch per step without one).
Per GPU, in seconds:

- compute: hardware FLOPs (`planner.flops`, recomputation included) of its
  share of each micro-batch (1 / (TP x CP x PP) of the work) at
  `matmul_efficiency` x h / (h + WIDTH_HALF_EFFICIENCY) x the dense peak of
  the precision, h the hidden size (narrow models run smaller kernels and
  spend more of their time outside matmuls; the form and its constant are
  fitted to Narayanan et al.'s weak-scaling series); (fp8-mixed: the
  blocks' matmuls at the fp8 peak and `fp8_matmul_efficiency`, attention and
  LM head at the 16-bit peak); the efficiencies are per GPU type, fitted to
  published runs (catalog fields, bench/throughput_calibration.py);
- pipeline bubble: (PP - 1) / VPP micro-batch times (1F1B, Narayanan et al.
  2021 Sec. 2.2);
- tensor parallelism: 4 all-reduces of the micro-batch's activations per
  layer (2 forward, 2 backward; 2 more when full recomputation repeats the
  forward; Shoeybi et al. 2019 Fig. 4), on the critical path;
- pipeline sends: activations forward, their gradients backward, per
  micro-batch and stage boundary, on the critical path;
- expert parallelism: 4 all-to-alls per MoE layer (dispatch and combine,
  forward and backward) of the routed tokens, on the critical path;
- data parallelism: the gradients' ring all-reduce, 2 (D-1)/D x bytes
  (ZeRO-1/2's reduce-scatter plus parameter all-gather move the same), and
  for ZeRO-3/FSDP the 16-bit parameters gathered for forward and backward of
  every micro-batch; what exceeds DP_OVERLAP of the step's compute (the
  backward pass; all of it with FSDP's prefetching) is exposed; under
  hybrid sharding (FSDP HYBRID_SHARD, Zhao et al. 2023 Sec. 3.2) the
  reduce-scatter and gathers run within the shard group of g ranks (NVLink
  when it fits in a node) and the D / g replicas all-reduce the 1/g
  gradient shards over the DP link;
- the optimizer step, bound by memory bandwidth over the states it updates;
  with offload, over PCIe and the CPU's Adam instead; sharded states split
  it over DP (over the shard group under HSDP).

Links: TP, and DP groups that fit in one node, use the GPU-to-GPU
interconnect. A DP ring spanning nodes runs one NCCL channel per NIC, so
its bus rate is `network_gbps` (per GPU) times the group's members in one
node (the node's NICs together: multi-node nccl-tests all_reduce busbw
reaches about the node's aggregate NIC rate, e.g. 85-96 GB/s with 4x HDR
per 8 A100s, NVIDIA/nccl-tests issue #119), at most the interconnect; one
NIC when the group has one member per node. PP sends and EP all-to-alls
leave through each GPU's own NIC: `network_gbps`. Every collective runs
at NCCL_BUS_EFFICIENCY of the link's one-direction rate.

Seconds per step have the form alpha + beta / DP on each of a few DP ranges
(DP inside one node or across nodes; DP communication hidden or exposed): the
solver needs no more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from planner import flops
from planner.activations import ACT_BYTES
from planner.adapters import NF4_BITS_X16384
from planner.architecture import adapter_params_per_block, param_counts
from planner.grid import IntArray, KnobArrays
from planner.specs import (
    OFFLOADS,
    OPTIMIZERS,
    PRECISIONS,
    RECOMPUTES,
    Framework,
    Gpu,
    Mode,
    Model,
    Offload,
    Optimizer,
    Precision,
    Recompute,
    Workload,
)

FloatArray = npt.NDArray[np.float64]

NCCL_BUS_EFFICIENCY = 0.8  # assumed share of a link's one-direction rate a ring collective reaches
DP_OVERLAP = 2 / 3  # gradient reduction hides behind this share of a step's compute (the backward pass)
DP_OVERLAP_PREFETCH = 1.0  # FSDP prefetches gathers under the forward too: the whole step's compute
WIDTH_HALF_EFFICIENCY = 1536  # hidden size at which matmul efficiency is half its large-model limit (bench: --width-search)
DP_MAX = 1 << 40  # no DP degree reaches this
RING_HOP_LATENCY_S = 20e-6  # per ring step of a collective spanning nodes; chosen in bench/throughput_calibration.py (--latency-search)
OPTIMIZER_BYTES_PER_PARAM = 32  # read master, gradient, two moments (16 B) and write them back with the weight
HBM_EFFICIENCY = 0.8  # assumed share of memory bandwidth an elementwise optimizer kernel reaches
CPU_ADAM_PARAMS_PER_S = 1e9  # assumed DeepSpeed CPU-Adam rate per GPU's share of host cores (order of magnitude)
PCIE_EFFICIENCY = 0.8  # assumed share of the host link's rate a pinned-memory copy reaches

_PEAK_FIELD = {
    Precision.FP32: "tf32_tflops",
    Precision.FP16: "fp16_tflops",
    Precision.BF16: "bf16_tflops",
    Precision.FP16_MIXED: "fp16_tflops",
    Precision.BF16_MIXED: "bf16_tflops",
    Precision.FP8_MIXED: "bf16_tflops",
}
_FP8 = PRECISIONS.index(Precision.FP8_MIXED)
_FP32 = PRECISIONS.index(Precision.FP32)
_FULL = RECOMPUTES.index(Recompute.FULL)
_ON_GPU = OFFLOADS.index(Offload.NONE)
_PARAMS_OFF = OFFLOADS.index(Offload.PARAMS)
_OPT_SCALE = np.array([{Optimizer.ADAMW_8BIT: 0.5, Optimizer.SGD: 0.4, Optimizer.SGD_MOMENTUM: 0.6}.get(o, 1.0) for o in OPTIMIZERS])


def peak_tflops(gpu: Gpu, precision: Precision) -> float:
    """Dense peak of a precision's 16-bit (or TF32/fp32) matmuls; fp8's GEMMs are separate."""
    rate = getattr(gpu, _PEAK_FIELD[precision])
    return rate or gpu.fp32_tflops


def mfu_peak_tflops(gpu: Gpu, precision: Precision) -> float:
    """The peak MFU divides by: fp8-mixed against the fp8 dense peak, the rest against their own."""
    return gpu.fp8_tflops if precision is Precision.FP8_MIXED else peak_tflops(gpu, precision)


@dataclass(frozen=True)
class StepTerms:
    """Seconds per step, piecewise in DP: piece j covers d_lo[:, j] <= DP <= d_hi[:, j]
    (empty where d_lo > d_hi) and takes alpha[:, j] + beta[:, j] / DP. Pieces: DP inside
    one node or across nodes, each with its DP/ZeRO communication hidden behind
    compute or not; every DP >= 1 falls in exactly one piece."""

    d_lo: IntArray  # (configurations, pieces)
    d_hi: IntArray
    alpha: FloatArray
    beta: FloatArray
    gamma: FloatArray  # seconds x DP: ring latency of ZeRO-3 gathers without a global batch (0 with one)
    compute_per_microbatch_s: FloatArray
    microbatches_numerator: FloatArray  # m x DP (global batch / micro-batch), or 0 without a global batch
    model_parallel_comm_per_microbatch_s: FloatArray  # TP, PP and EP traffic on the critical path
    bubble_microbatches: FloatArray  # (PP - 1) / VPP

    def breakdown(self, dp: npt.ArrayLike) -> dict[str, FloatArray]:
        """Seconds per step by part: compute, pipeline bubble, model-parallel communication,
        and the rest (exposed data-parallel communication and the optimizer step)."""
        d = np.asarray(dp, dtype=np.int64)
        m = np.where(self.microbatches_numerator > 0, self.microbatches_numerator / d, 1.0)
        parts = {
            "compute": m * self.compute_per_microbatch_s,
            "pipeline bubble": self.bubble_microbatches * self.compute_per_microbatch_s,
            "TP/PP/EP communication": m * self.model_parallel_comm_per_microbatch_s,
        }
        parts["DP communication and optimizer step"] = np.maximum(self.seconds(d) - sum(parts.values()), 0.0)
        return parts

    def piece(self, dp: npt.ArrayLike) -> IntArray:
        d = np.asarray(dp, dtype=np.int64)[:, None]
        return np.argmax((self.d_lo <= d) & (d <= self.d_hi), axis=1)

    def seconds(self, dp: npt.ArrayLike) -> FloatArray:
        d = np.asarray(dp, dtype=np.int64)
        j = self.piece(d)
        rows = np.arange(len(d))
        return self.alpha[rows, j] + self.beta[rows, j] / d + self.gamma[rows, j] * d


def _gpu_column(gpus: Sequence[Gpu], k: KnobArrays, value: object) -> FloatArray:
    return np.array([float(value(g)) for g in gpus], dtype=np.float64)[k.gpu]  # type: ignore[operator]


def _flops_split(model: Model, workload: Workload, k: KnobArrays) -> tuple[FloatArray, FloatArray]:
    """Hardware FLOPs per token of each row: (the blocks' linear layers, the rest), from planner.flops."""
    parts = np.array([flops.hardware_flops_parts(model, workload.seq_len, r, workload.mode) for r in RECOMPUTES], dtype=np.float64)
    return parts[k.recompute, 0], parts[k.recompute, 1]


def _ring_s(bytes_: FloatArray, ranks: FloatArray, gbps: FloatArray) -> FloatArray:
    """Ring all-reduce of `bytes_` over `ranks`: 2 (n-1)/n x bytes at the bus rate."""
    return np.where(ranks > 1, 2 * (ranks - 1) / ranks * bytes_ / (gbps * 1e9 * NCCL_BUS_EFFICIENCY), 0.0)


def step_terms(model: Model, workload: Workload, k: KnobArrays, gpus: Sequence[Gpu]) -> StepTerms:
    """alpha and beta of every configuration (k.dp is ignored), per link regime."""
    s = workload.seq_len
    tp, pp, cp, vpp, mb = (x.astype(np.float64) for x in (k.tp, k.pp, k.cp, k.vpp, k.micro_batch))
    node = _gpu_column(gpus, k, lambda g: g.gpus_per_node)
    intra = _gpu_column(gpus, k, lambda g: g.interconnect_gbps / 2)  # catalog: both directions
    network = _gpu_column(gpus, k, lambda g: g.network_gbps)
    pcie = _gpu_column(gpus, k, lambda g: g.pcie_gbps)
    hbm = _gpu_column(gpus, k, lambda g: g.memory_bandwidth_gbps)
    width = model.hidden_size / (model.hidden_size + WIDTH_HALF_EFFICIENCY)
    eff = _gpu_column(gpus, k, lambda g: g.matmul_efficiency) * width
    eff8 = _gpu_column(gpus, k, lambda g: g.fp8_matmul_efficiency or g.matmul_efficiency) * width
    peak = np.zeros(len(k), dtype=np.float64)
    for i, p in enumerate(PRECISIONS):
        rows = k.precision == i
        if rows.any():
            peak[rows] = _gpu_column(gpus, k, lambda g, p=p: peak_tflops(g, p))[rows]
    peak8 = _gpu_column(gpus, k, lambda g: g.fp8_tflops or peak_tflops(g, Precision.BF16_MIXED))

    # compute of one micro-batch on one GPU
    tokens = mb * s
    share = tp * cp * pp
    block_linear, rest = _flops_split(model, workload, k)
    fp8 = k.precision == _FP8
    linear_s = tokens * block_linear / share / np.where(fp8, peak8 * 1e12 * eff8, peak * 1e12 * eff)
    rest_s = tokens * rest / share / (peak * 1e12 * eff)
    compute = linear_s + rest_s

    # critical-path communication of one micro-batch
    act = ACT_BYTES[k.precision]
    activation_bytes = tokens / cp * model.hidden_size * act
    layers = np.ceil(model.num_layers / pp)
    allreduces = 4 + np.where(k.recompute == _FULL, 2, 0)
    tp_s = layers * allreduces * _ring_s(activation_bytes, tp, intra)
    pp_link = np.where(tp * pp <= node, intra, network)
    pp_s = np.where(pp > 1, 2 * activation_bytes / tp / (pp_link * 1e9 * NCCL_BUS_EFFICIENCY), 0.0)
    ep = k.ep.astype(np.float64)
    moe = model.moe
    ep_s = np.zeros(len(k))
    if moe is not None:
        moe_layers = np.ceil((model.num_layers - moe.dense_layers) / pp)
        routed = activation_bytes * moe.top_k / tp
        ep_link = np.where(tp * ep <= node, intra, network)
        ep_s = np.where(ep > 1, moe_layers * 4 * (ep - 1) / ep * routed / (ep_link * 1e9 * NCCL_BUS_EFFICIENCY), 0.0)
    per_microbatch = compute + tp_s + pp_s + ep_s

    # micro-batches per step: m = numerator / DP, or 1 without a global batch
    gb = workload.global_batch
    numerator = gb / mb if gb else np.zeros(len(k))
    bubble = (pp - 1) / vpp * compute

    # data parallelism and the optimizer step: what trains (adapters only under LoRA/QLoRA) is reduced
    # and updated; ZeRO-3/FSDP gather the (frozen or not) base in its storage format
    trained, stored, stored_bytes = _params_per_gpu(model, workload, k)
    grad_bytes = np.where((k.precision == _FP32) | (not workload.framework.zero_states), 4.0, 2.0)
    sharded = k.zero_stage >= 1
    offload = k.offload != _ON_GPU
    host = pcie * 1e9 * PCIE_EFFICIENCY
    opt_gpu = np.where(offload, 0.0, trained * OPTIMIZER_BYTES_PER_PARAM * _OPT_SCALE[k.optimizer] / (hbm * 1e9 * HBM_EFFICIENCY))
    opt_cpu = np.where(offload, trained / CPU_ADAM_PARAMS_PER_S + 4 * trained / host, 0.0)
    params_traffic = np.where(k.offload == _PARAMS_OFF, 4 * stored * stored_bytes / host, 0.0)
    opt_step = (opt_gpu + opt_cpu + params_traffic) / np.where(sharded, cp, 1.0)
    # per step: ZeRO-0 all-reduces the gradients (2 (D-1)/D x bytes), ZeRO-1/2 reduce-scatter them and all-gather
    # the updated 16-bit parameters, ZeRO-3/FSDP reduce-scatter them and gather the parameters for the forward and
    # the backward of every micro-batch ((D-1)/D x bytes each; gathers taken at the full bytes, an upper bound)
    z = k.zero_stage
    allreduce_bytes = 2 * trained * grad_bytes  # a ring all-reduce of the gradients moves 2 (D-1)/D x this
    ring_bytes = np.where(z == 0, allreduce_bytes, trained * grad_bytes + np.where(z <= 2, trained * 2.0, 0.0))
    gathers = np.where(z >= 3, 2 * stored * stored_bytes, 0.0)
    prefetch = DP_OVERLAP_PREFETCH if workload.framework is Framework.FSDP else DP_OVERLAP
    overlap = np.where(z >= 3, prefetch, DP_OVERLAP)

    # hybrid sharding (HSDP): the states shard over g = dp_shard ranks (one node's, as searched) and
    # D / g replicas all-reduce their gradient shards: 2 (r-1)/r x bytes / g = 2 bytes / g - 2 bytes / D
    g = np.maximum(k.dp_shard, 1).astype(np.float64)
    hybrid = k.dp_shard > 0
    opt_alpha = np.where(hybrid, opt_step / g, np.where(sharded, 0.0, opt_step))
    opt_beta = np.where(sharded & ~hybrid, opt_step, 0.0)
    if gb:  # per step: m = numerator / DP micro-batches
        base_alpha = bubble + opt_alpha
        base_beta = numerator * per_microbatch + opt_beta
        hide_alpha, hide_beta = np.zeros(len(k)), overlap * numerator * compute
    else:  # one micro-batch per step
        base_alpha = per_microbatch + bubble + opt_alpha
        base_beta = opt_beta
        hide_alpha, hide_beta = overlap * compute, np.zeros(len(k))
    node_dp = (node // (tp * pp * cp)).astype(np.int64)
    # a ring spanning nodes runs one channel per NIC: its bus rate is the NICs of the ring's members in a
    # node together (nccl-tests), one NIC when the group has one member per node (DP across TP/PP groups)
    across = np.minimum(network * np.maximum(node_dp, 1), intra)
    shard_link = np.where(g * tp * cp <= node, intra, network) * 1e9 * NCCL_BUS_EFFICIENCY
    shard_ring = ring_bytes * (1 - 1 / g) / shard_link
    shard_gather = gathers / shard_link
    pieces = []
    # ring latency of the per-layer ZeRO-3/FSDP collectives (two gathers and a reduce-scatter per layer and
    # micro-batch), N - 1 ring steps each over the N = DP x CP shards: per step with m = numerator / DP
    # micro-batches that is alpha + beta / DP; with one micro-batch per step, N - 1 grows with DP (gamma)
    # under HSDP what crosses nodes is the replicas' all-reduce per layer and micro-batch, 2 (D/g - 1) steps
    hop = np.where(hybrid, 2.0, 3.0 * (k.zero_stage >= 3)) * layers * RING_HOP_LATENCY_S
    if gb:
        lat_alpha = hop * numerator * np.where(hybrid, 1 / g, cp)
        lat_beta = -hop * numerator
        lat_gamma = np.zeros(len(k))
    else:
        lat_alpha = -hop
        lat_beta = np.zeros(len(k))
        lat_gamma = hop * np.where(hybrid, 1 / g, cp)
    latency = np.stack([lat_alpha, lat_beta, lat_gamma])
    # HSDP replicas: one member per node when the shard group fills the node's DP ranks
    replica_across = np.minimum(network * np.maximum(node_dp // np.maximum(k.dp_shard, 1), 1), intra)
    for dp_link, replica_link, lo, hi in (
        (intra, intra, np.ones(len(k), dtype=np.int64), node_dp),
        (across, replica_across, node_dp + 1, np.full(len(k), DP_MAX)),
    ):
        link = dp_link * 1e9 * NCCL_BUS_EFFICIENCY
        r_link = replica_link * 1e9 * NCCL_BUS_EFFICIENCY
        ring = np.where(hybrid, shard_ring + allreduce_bytes / g / r_link, ring_bytes / link)  # alpha part
        ring_beta = np.where(hybrid, -allreduce_bytes / r_link, -ring_bytes / link)  # (D-1)/D: - bytes / D
        gather = np.where(hybrid, shard_gather, gathers / link)
        comm_alpha = ring + (0.0 if gb else gather)
        comm_beta = ring_beta + (numerator * gather if gb else 0.0)
        spanning = lo > node_dp  # latency counts where the ring crosses nodes, always exposed
        lat = np.where(spanning, latency, 0.0)
        split = _split_exposed(lo, hi, base_alpha, base_beta, comm_alpha - hide_alpha, comm_beta - hide_beta)
        pieces += [(a_lo, a_hi, a + lat[0], b + lat[1], lat[2]) for a_lo, a_hi, a, b in split]
    d_lo, d_hi, alpha, beta, gamma = (np.stack([np.broadcast_to(p[i], (len(k),)) for p in pieces], axis=1) for i in range(5))
    return StepTerms(d_lo, d_hi, alpha, beta, gamma, compute, numerator, tp_s + pp_s + ep_s, (pp - 1) / vpp)


def _split_exposed(lo: IntArray, hi: IntArray, alpha: FloatArray, beta: FloatArray, a: FloatArray, b: FloatArray) -> list[tuple]:
    """Two pieces of [lo, hi]: where a + b / D <= 0 the communication hides behind compute
    (seconds alpha + beta / D), where it is positive it adds (alpha + a + (beta + b) / D)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.where(a != 0, -b / a, np.inf)
    root = np.clip(np.nan_to_num(root, nan=0.0, posinf=DP_MAX, neginf=0.0), 0, DP_MAX)
    grows = a > 0  # exposed for D > root
    first_exposed = np.floor(root).astype(np.int64) + 1
    last_exposed = np.ceil(root).astype(np.int64) - 1
    always = (a == 0) & (b > 0)
    never = (a == 0) & (b <= 0)
    exp_lo = np.where(grows, np.maximum(lo, first_exposed), lo)
    exp_hi = np.where(grows, hi, np.minimum(hi, last_exposed))
    exp_lo = np.where(never, hi + 1, np.where(always, lo, exp_lo))
    exp_hi = np.where(never, hi, np.where(always, hi, exp_hi))
    hid_lo = np.where(grows, lo, np.maximum(lo, exp_hi + 1))
    hid_hi = np.where(grows, np.minimum(hi, exp_lo - 1), hi)
    hid_lo = np.where(always, hi + 1, np.where(never, lo, hid_lo))
    hid_hi = np.where(always, hi, np.where(never, hi, hid_hi))
    return [(hid_lo, hid_hi, alpha, beta), (exp_lo, exp_hi, alpha + a, beta + b)]


def _params_per_gpu(model: Model, workload: Workload, k: KnobArrays) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per model-parallel rank (TP, PP and EP split; before ZeRO): parameters that
    train, parameters stored, and bytes per stored parameter as ZeRO-3 gathers them."""
    counts = param_counts(model)
    ep = k.ep.astype(np.float64)
    split = (k.tp * k.pp).astype(np.float64)
    stored = (counts.total - counts.routed_experts) / split + counts.routed_experts / (split * ep)
    if not workload.mode.adapters:
        return stored, stored, np.where(k.precision == _FP32, 4.0, 2.0)
    adapters = model.num_layers * adapter_params_per_block(model, workload.lora_rank, str(workload.lora_targets)) / split
    width = NF4_BITS_X16384 / (8 * 16384) if workload.mode is Mode.QLORA else 2.0
    return adapters, stored, np.where(k.precision == _FP32, 4.0, width)
