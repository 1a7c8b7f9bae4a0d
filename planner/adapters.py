"""Model states of adapter fine-tuning (LoRA, QLoRA): a frozen base and small
trainable adapters. Integer bytes, numpy-vectorized over knob arrays.

LoRA (Hu et al. 2021): the base stays in the working precision, frozen (no
gradients, no optimizer states); adapters of rank r add r x (in + out)
parameters per adapted linear layer and carry their own gradients and
optimizer states. Under mixed precision PEFT keeps adapters in fp32
(`autocast_adapter_dtype`), under pure 16-bit in 16 bits.
QLoRA (Dettmers et al. 2023): the base's linear layers in 4-bit NF4 with
one absmax per 64 weights, double-quantized to 8 bits with an fp32 constant
per 256 of them (0.5 + 1/64 + 4/16384 bytes per weight); embeddings, LM head
and norms in fp32, as PEFT's prepare_model_for_kbit_training leaves them (it
upcasts every non-quantized parameter; recipes that cast them back to 16 bits,
like torchtune's, hold less); each layer's weight is dequantized to 16 bits
while it computes. ZeRO-3/FSDP shard the frozen base too (FSDP-QLoRA).
The QLoRA paper's "4-bit base model 5,048 MB" for LLaMA-7B is not decomposed
there; what bitsandbytes stores comes to 3.34 GB of NF4 blocks and 0.52 GB
(bf16, as the paper's qlora.py casts embed_tokens and lm_head back under
--bf16) to 1.05 GB (fp32) of embeddings and head. The rest of the figure is
not attributed by any source found (a CUDA context if it was read from
nvidia-smi), so nothing is added for it.
"""

from __future__ import annotations

import numpy as np

from planner.architecture import ParamCounts, adapter_params_per_block, block_params_per_ep_rank, linear_shapes
from planner.grid import IntArray, KnobArrays, ceil_div
from planner.serving import BITS_X16384
from planner.specs import OFFLOADS, PRECISIONS, Accounting, Mode, Model, Offload, Precision, WeightFormat, Workload
from planner.states import FP32, Stage, States, optimizer_state_bytes, params_on_gpu, stage_layers

NF4_BITS_X16384 = BITS_X16384[WeightFormat.NF4_DQ]  # the served nf4-dq layout: 4.127 bits per weight
_FP32_PRECISION = PRECISIONS.index(Precision.FP32)
_MIXED = np.array([int(p.value.endswith("-mixed")) for p in PRECISIONS], dtype=np.int64)
_ON_GPU = OFFLOADS.index(Offload.NONE)
_PARAMS_OFF = OFFLOADS.index(Offload.PARAMS)


def adapter_params_on_gpu(model: Model, workload: Workload, k: KnobArrays) -> IntArray:
    """Adapter parameters on one GPU: its stage's blocks, split by TP."""
    per_block = adapter_params_per_block(model, workload.lora_rank, str(workload.lora_targets))
    return ceil_div(stage_layers(model, k) * per_block, k.tp)


def base_weights_bytes(counts: ParamCounts, model: Model, k: KnobArrays, mode: Mode, stage: Stage) -> IntArray:
    """The frozen base: 16-bit (fp32 when training in fp32), or under QLoRA its
    block matrices in NF4 with double-quantized constants and the rest in fp32;
    ZeRO-3/FSDP shard it."""
    prm = params_on_gpu(counts, model, k, stage)
    plain = np.where(k.precision == _FP32_PRECISION, 4, 2)

    def stored(held: IntArray) -> IntArray:
        """Bytes of `held` parameters; under QLoRA the block matrices among them (every routed
        expert not held is one) in NF4, the rest fp32."""
        if mode is not Mode.QLORA:
            return held * plain
        layers = stage_layers(model, k)
        matrices = ceil_div(np.where(k.pp == 1, counts.tp_sharded - counts.embedding_sharded - counts.head_sharded,
                                     layers * counts.block_sharded), k.tp)
        matrices = np.minimum(matrices - (prm.all - held), held)
        return (held - matrices) * FP32 + ceil_div(matrices * NF4_BITS_X16384, 8 * 16384)

    # ZeRO-3/FSDP shard the whole model over DP x CP (routed experts over EP, then over the
    # expert-data-parallel group DP x CP / EP: the same 1/(DP x CP)); otherwise each rank holds its 1/EP of the experts
    sharded = ceil_div(stored(prm.all), k.shards)
    return np.where(k.zero_stage >= 3, sharded, stored(prm.local))


def adapter_states(counts: ParamCounts, model: Model, workload: Workload, k: KnobArrays, stage: Stage) -> States:
    """Frozen base + adapters with gradients and optimizer states (sharded by the ZeRO stage as usual);
    QLoRA adds the 16-bit copy of the largest matrix being dequantized."""
    a = adapter_params_on_gpu(model, workload, k)
    adapter_bytes = np.where(_MIXED[k.precision] == 1, FP32, np.where(k.precision == _FP32_PRECISION, 4, 2))
    z = k.zero_stage
    adapters = np.where(z >= 3, ceil_div(a * adapter_bytes, k.shards), a * adapter_bytes)
    weights = base_weights_bytes(counts, model, k, workload.mode, stage) + adapters
    grads = np.where(z >= 2, ceil_div(a * adapter_bytes, k.shards), a * adapter_bytes)
    states = optimizer_state_bytes(counts, a, k, Accounting.FULL)
    opt = np.where(z >= 1, ceil_div(states, k.shards), states)
    buffers = np.zeros_like(a)
    if workload.mode is Mode.QLORA:
        largest = max(i * o for _, i, o, _ in linear_shapes(model))
        buffers = buffers + ceil_div(largest * 2, k.tp)
    # FSDP/ZeRO-3 gather the unit in use and the next, in their storage format: FSDP-QLoRA gathers
    # NF4 blocks; embeddings and the LM head are fp32 there
    plain = np.where(k.precision == _FP32_PRECISION, 4, 2)
    block = ceil_div(block_params_per_ep_rank(model, k.ep), k.tp)
    ends = ceil_div(counts.embedding, k.tp) * (FP32 if workload.mode is Mode.QLORA else plain)
    stored = ceil_div(block * NF4_BITS_X16384, 8 * 16384) if workload.mode is Mode.QLORA else block * plain
    unit = np.maximum(stored, ends)
    buffers = buffers + np.where(z >= 3, 2 * unit, 0)
    off = k.offload != _ON_GPU  # offloaded or paged: the states leave the GPU while it computes
    params_off = k.offload == _PARAMS_OFF  # FSDP/ZeRO-3 CPU offload: the sharded base and adapters too
    cpu = np.where(off, opt, 0) + np.where(params_off, weights + grads, 0)
    return States(np.where(params_off, 0, weights), np.where(params_off, 0, grads), np.where(off, 0, opt), buffers, cpu)
