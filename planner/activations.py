"""Activation and logits memory per GPU, in integer bytes, numpy-vectorized.

Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models") is the base; the block-level counts are generalized to
the architecture and framework in hand and were checked byte for byte
against PyTorch's saved tensors (bench/saved_tensors.py).
"""

from __future__ import annotations

import numpy as np

from planner.architecture import attention_score_width
from planner.grid import IntArray, KnobArrays, ceil_div
from planner.specs import (
    LOSS_CHUNKS,
    PRECISIONS,
    RECOMPUTES,
    Accounting,
    AttentionKernel,
    Framework,
    LossKernel,
    Model,
    Norm,
    Precision,
    Recompute,
    Workload,
)
from planner.states import MIXED, Stage, stage_layers

ACT_BYTES = np.array([4 if p is Precision.FP32 else 2 for p in PRECISIONS], dtype=np.int64)  # 16-bit except fp32 training
FP32 = 4
_NONE = RECOMPUTES.index(Recompute.NONE)
_SELECTIVE = RECOMPUTES.index(Recompute.SELECTIVE)
_FULL = RECOMPUTES.index(Recompute.FULL)


# ---- the seeds' formula -------------------------------------------------------------------


def seed_activation_factor(model: Model, seq_len: int, k: KnobArrays) -> tuple[IntArray, IntArray]:
    """The seeds' activation bytes per s*b*h*L, as an exact fraction (numerator, denominator).

    Korthikanti et al. 2022, Table 2 (seed 001), 16-bit activations, no
    sequence parallelism: none 10 + 24/t + 5as/(ht); selective 10 + 24/t; full 2.
    """
    h, a, s = model.hidden_size, model.num_heads, seq_len
    den = h * k.tp
    num = np.select(
        [k.recompute == _NONE, k.recompute == _SELECTIVE],
        [10 * den + 24 * h + 5 * a * s, 10 * den + 24 * h],
        2 * den,
    )
    return num, den


def seed_activation_bytes(model: Model, seq_len: int, k: KnobArrays) -> IntArray:
    """s*b*h*L times `seed_activation_factor`, rounded up once (exact when it divides)."""
    sbhl = seq_len * k.micro_batch * model.hidden_size * model.num_layers
    num, den = seed_activation_factor(model, seq_len, k)
    whole, rest = np.divmod(num, den)
    return sbhl * whole + ceil_div(sbhl * rest, den)


# ---- one transformer block ---------------------------------------------------------------


def local_tokens(workload: Workload, k: KnobArrays) -> IntArray:
    """Tokens of one micro-batch on one GPU: the sequence split over CP ranks."""
    return ceil_div(workload.seq_len, k.cp) * k.micro_batch


def _mlp_width(model: Model) -> int:
    """FFN width a token passes through in the widest layer: the dense FFN, or
    top-k routed plus shared experts in an MoE layer."""
    moe = model.moe
    if moe is None:
        return model.ffn_size
    routed = moe.expert_ffn_size * (moe.top_k + moe.shared_experts)
    return max(routed, model.ffn_size if moe.dense_layers else 0)


def autocast_residual(workload: Workload, k: KnobArrays) -> IntArray:
    """Rows that run PyTorch autocast over fp32 parameters with a replicated model
    (the fsdp profile at ZeRO 0-1: DDP or one process, as HF Trainer runs it).
    The embedding is never cast, so the residual stream stays fp32 (fp32 + bf16
    adds give fp32): every norm reads fp32, and each linear casts its fp32 input
    to 16 bits on its own. FSDP proper (ZeRO-2/3) casts the parameters for
    compute instead (MixedPrecision param_dtype), so its residual is 16-bit.
    Measured on the CPU with the profiler's memory timeline (bench/gpu_peak.py
    --device cpu); CUDA's autocast keeps the same dtypes."""
    return (workload.framework is Framework.FSDP) & (MIXED[k.precision] == 1) & (k.zero_stage <= 1)


def residual_bytes(workload: Workload, k: KnobArrays) -> IntArray:
    """Bytes per element of the residual stream: fp32 under `autocast_residual`, else the working dtype."""
    return np.where(autocast_residual(workload, k), FP32, ACT_BYTES[k.precision])


def norm_bytes_per_element(model: Model, workload: Workload, k: KnobArrays) -> IntArray:
    """What one norm saves per hidden element for backward.

    Fused kernels (Megatron/TE) and PyTorch's native LayerNorm keep the input
    in the working dtype; RMSNorm written in Python (HF transformers,
    torchtune) keeps an fp32 copy of the input plus the normalized tensor.
    Measured with saved-tensor hooks (bench/saved_tensors.py). Under an fp32
    autocast residual (`autocast_residual`) both are fp32: LayerNorm's input,
    RMSNorm's input and normalized tensor. Per-token statistics (fp32
    mean/rstd) come on top, see `_norm_stats_bytes`.
    """
    rms = not workload.fused_kernels and model.norm is Norm.RMSNORM
    return np.where(autocast_residual(workload, k), 2 * FP32 if rms else FP32, _norm_saves(rms, ACT_BYTES[k.precision]))


def _norm_saves(python_rms: bool, act: IntArray) -> IntArray:
    """Bytes per element a norm over a working-dtype input saves: an RMSNorm written in
    Python keeps an fp32 copy and the normalized tensor, a fused or native norm its input."""
    return FP32 + act if python_rms else act


def autocast_cast_copies(model: Model) -> int:
    """Extra 16-bit copies of a normalized tensor per layer under an fp32 autocast
    residual: q, k and v cast their shared input separately (2 more than one),
    and so do a gated MLP's gate and up (1 more). HF's Llama-family layers are
    separate projections; models with a fused qkv (GPT-2) make fewer copies,
    so this over-counts them (the safe side)."""
    return 2 + (1 if model.ffn_matrices == 3 else 0)


def _norm_stats_bytes(model: Model) -> int:
    """fp32 statistics per token per norm: mean and rstd for LayerNorm, rstd for RMSNorm."""
    return 8 if model.norm is Norm.LAYERNORM else 4


def attention_core_bytes(model: Model, workload: Workload, k: KnobArrays) -> IntArray:
    """What the attention core (QK^T, softmax, dropout, x V) saves, split by TP.

    Eager: softmax probabilities a*s*s per sequence: in the working dtype with
    fused kernels (Korthikanti's 5as^2b with dropout), as fp32 plus a 16-bit
    copy in PyTorch models that upcast the softmax; plus dropout mask (1 B)
    and output for models with dropout. Flash/SDPA (Dao et al. 2022): an fp32
    log-sum-exp per head and token only; its output is the projection input
    counted with the block. With CP each rank scores its own queries.
    """
    act = ACT_BYTES[k.precision]
    tokens = local_tokens(workload, k)
    if workload.attention is AttentionKernel.EAGER:
        probs = act if workload.fused_kernels else 4 + np.where(act < 4, act, 0)
        mask = 1 if model.dropout else 0
        core = tokens * workload.seq_len * model.num_heads * (probs + mask * (1 + act))
    else:
        core = tokens * model.num_heads * FP32
    return ceil_div(core, k.tp)


def mlp_saved_tensors(model: Model, fused_kernels: bool) -> int:
    """Tensors of FFN width one token leaves saved in the MLP.

    GeLU/ReLU: activation input and output (Korthikanti), or 5 for GPT-2's
    tanh GeLU written in Python (HF `gelu_new`: fc output, three
    intermediates, projection input). Gated (SwiGLU/GeGLU): gate, up,
    act(gate) and product in PyTorch; 3 with Megatron's fused kernel
    (gate and up in one tensor, product) or under torch.compile (Inductor
    saves the matmul outputs and recomputes the pointwise ops).
    """
    if model.ffn_matrices == 3:
        return 3 if fused_kernels else 4
    if not fused_kernels and model.ffn_activation == "gelu-tanh":
        return 5
    return 2


def attention_saved_width(model: Model, workload: Workload) -> int:
    """Per token, the widths of q, k, v and the output projection's input the block saves:
    grouped-query k/v widths with flash attention, repeated to every head by eager
    attention; under MLA q and k have qk_nope + qk_rope dims per head, v and the output v_head_dim."""
    if model.mla is not None:
        return 2 * attention_score_width(model) + 2 * model.attention_width
    kv = model.kv_width if workload.attention is AttentionKernel.FLASH else model.attention_width
    return 2 * model.attention_width + 2 * kv


def layer_activation_bytes(model: Model, workload: Workload, k: KnobArrays) -> IntArray:
    """Bytes one transformer block saves for one micro-batch without recomputation.

    Generalizes Korthikanti et al. 2022 Sec. 4.1 (which it reproduces exactly
    for a GPT block with fused kernels: LayerNorm, 4h GeLU MLP, dropout, eager
    attention, giving sbh(10 + 24/t + 5as/(ht)) with 16-bit activations, and
    sbh/t(34 + 5as/h) with sequence parallelism) to the block and framework
    in hand:
    - outside TP regions (split by TP only under sequence parallelism): what
      each norm saves, the two linear-layer inputs (one for a parallel block
      with a single norm), dropout masks (1 B), MoE dispatch copies and fp32
      router probabilities;
    - inside TP regions: q, k, v (grouped-query widths with flash attention;
      eager attention repeats k and v to every head before saving them), the
      output projection's input, the MLP's saved tensors (`mlp_saved_tensors`);
    - the attention core (`attention_core_bytes`);
    - with CP, one extra k/v chunk in flight for ring attention.
    """
    act = ACT_BYTES[k.precision]
    h = model.hidden_size
    tokens = local_tokens(workload, k)
    norms = model.norms_per_layer
    linear_inputs = 1 if model.parallel_block and norms == 1 else 2
    mask = 1 if model.dropout else 0
    norm_elem = norm_bytes_per_element(model, workload, k)
    casts = linear_inputs + np.where(autocast_residual(workload, k), autocast_cast_copies(model), 0)
    outside = tokens * h * (norms * norm_elem + act * casts + 2 * mask) + tokens * norms * _norm_stats_bytes(model)
    if model.moe is not None:
        dispatch = tokens * model.moe.top_k * h * act  # tokens copied per routed expert (and received, under EP)
        outside = outside + np.where(k.ep > 1, 2 * dispatch, dispatch) + tokens * model.moe.num_experts * FP32
    outside = np.where(k.sp == 1, ceil_div(outside, k.tp), outside)
    if model.mla is not None:  # the latents and the shared RoPE key, on every TP rank (DeepSeek-V2 Sec. 2.1.1)
        latents = model.mla.q_lora_rank + model.mla.kv_lora_rank
        norms_in_latents = (model.mla.q_lora_rank > 0) + 1
        outside = outside + tokens * (latents * (norm_elem + act) + model.mla.qk_rope_head_dim * act
                                      + norms_in_latents * _norm_stats_bytes(model))
    mlp = mlp_saved_tensors(model, workload.fused_kernels) * _mlp_width(model)
    inside = tokens * act * (attention_saved_width(model, workload) + mlp)
    if model.qk_norm:  # a per-head norm over q and k (in the TP region): what a norm saves, plus per-head statistics
        q_norm_elem = _norm_saves(not workload.fused_kernels, act)  # an RMSNorm over 16-bit q and k
        inside = inside + tokens * ((model.attention_width + model.kv_width) * q_norm_elem
                                    + (model.num_heads + model.num_kv_heads) * _norm_stats_bytes(model))
    ring = np.where(k.cp > 1, tokens * act * 2 * model.kv_width, 0)
    return outside + ceil_div(inside + ring, k.tp) + attention_core_bytes(model, workload, k)


def op_checkpoint_layer_bytes(model: Model, workload: Workload, k: KnobArrays) -> IntArray:
    """What a block keeps under torchtitan's op-level selective checkpointing
    (`selective_ac_option = "op"`): the block's input, the attention output
    and its log-sum-exp, and every other matmul output in forward order
    (q, v, gate, down of q, k, v, o, gate, up, down; q, v, fc of a GeLU
    block), recomputing the rest in backward. Column-parallel outputs split
    by TP; the block input and row-parallel outputs only under SP.
    """
    act = ACT_BYTES[k.precision]
    h, qw, f = model.hidden_size, model.attention_width, _mlp_width(model)
    kw, vw = (attention_score_width(model), qw) if model.mla else (model.kv_width, model.kv_width)
    tokens = local_tokens(workload, k)
    outputs = [(attention_score_width(model), True), (kw, True), (vw, True), (h, False)]
    outputs += [(f, True), (f, True), (h, False)] if model.ffn_matrices == 3 else [(f, True), (h, False)]
    saved = outputs[0::2]
    split = tokens * act * (sum(w for w, col in saved if col) + qw) + tokens * model.num_heads * FP32
    whole = tokens * act * (h + sum(w for w, col in saved if not col))
    whole = np.where(k.sp == 1, ceil_div(whole, k.tp), whole)
    return whole + ceil_div(split, k.tp)


def rotary_table_bytes(model: Model, workload: Workload, k: KnobArrays) -> IntArray:
    """The cos and sin tables of rotary position embeddings, computed once per
    forward in the residual stream's dtype and saved by every layer's q/k
    rotation (2 x tokens x head_dim). Models with a learned position table have none."""
    if model.learned_positions:
        return np.zeros_like(k.tp)
    rotated = model.mla.qk_rope_head_dim if model.mla else model.head_dim
    return 2 * local_tokens(workload, k) * rotated * residual_bytes(workload, k)  # HF: the tables take x's dtype


# ---- a pipeline stage ---------------------------------------------------------------------


def in_flight(workload: Workload, k: KnobArrays) -> IntArray:
    """Micro-batches whose activations the first pipeline stage holds under
    1F1B: PP, or fewer when the step has fewer micro-batches (Narayanan et al.
    2021). Without a global batch the step is taken to have at least PP."""
    if workload.global_batch is None:
        return k.pp
    micro_batches = np.maximum(workload.global_batch // (k.micro_batch * k.dp), 1)
    return np.minimum(k.pp, micro_batches)


def held_layer_micro_batches(model: Model, workload: Workload, k: KnobArrays) -> tuple[IntArray, IntArray]:
    """Layer activations (one layer, one micro-batch each) the fullest stage
    holds, as a fraction (numerator, denominator): ceil(L/PP) x in-flight;
    interleaved 1F1B with v virtual stages multiplies PP's share by
    1 + (PP-1)/(PP*v) (Korthikanti et al. 2022, Sec. 4.2.3)."""
    layers = stage_layers(model, k)
    interleaved = k.vpp > 1
    num = np.where(interleaved, layers * (k.pp * k.vpp + k.pp - 1), layers * in_flight(workload, k))
    den = np.where(interleaved, k.vpp, 1)
    return num, den


def activation_bytes(model: Model, workload: Workload, k: KnobArrays, stage: Stage = Stage.FIRST) -> IntArray:
    """Activations held at the start of backward on a pipeline stage.

    Per micro-batch in flight: none keeps every block as
    `layer_activation_bytes`; selective drops the attention core, recomputed
    in backward (Korthikanti Sec. 5; a no-op with flash attention, which
    already recomputes), or under FSDP keeps what torchtitan's op-level
    checkpointing keeps (`op_checkpoint_layer_bytes`); full keeps each block's input (split by TP under
    sequence parallelism) and rematerializes one block at a time. The first
    stage holds the micro-batches in flight (`held_layer_micro_batches`) and
    the rotary tables and embedding dropout masks of each; the last stage
    holds one micro-batch and what the final norm and LM head keep. Seed
    accounting uses `seed_activation_bytes` and nothing else.
    """
    if workload.accounting is Accounting.SEED:
        return seed_activation_bytes(model, workload.seq_len, k)
    act = ACT_BYTES[k.precision]
    tokens = local_tokens(workload, k)
    h = model.hidden_size
    layer = layer_activation_bytes(model, workload, k)
    recomputable = 0
    if workload.attention is AttentionKernel.EAGER:
        recomputable = attention_core_bytes(model, workload, k)
    resid = residual_bytes(workload, k)  # a checkpointed block keeps its input: the residual stream
    kept_input = np.where(k.sp == 1, ceil_div(tokens * h * resid, k.tp), tokens * h * resid)
    if workload.framework is Framework.FSDP:
        selective = op_checkpoint_layer_bytes(model, workload, k)
    else:
        selective = layer - recomputable
    per_layer = np.select([k.recompute == _NONE, k.recompute == _SELECTIVE], [layer, selective], kept_input)
    first = stage is Stage.FIRST
    num, den = held_layer_micro_batches(model, workload, k) if first else (stage_layers(model, k), 1)
    held = ceil_div(per_layer * num, den) + np.where(k.recompute == _FULL, layer, 0)
    rotary = rotary_table_bytes(model, workload, k) * (in_flight(workload, k) if first else 1)
    embedding_mask = in_flight(workload, k) * tokens * h if model.dropout and first else 0
    final_norm = tokens * h * norm_bytes_per_element(model, workload, k) + tokens * _norm_stats_bytes(model)
    head = np.where((k.pp == 1) | (not first), final_norm + tokens * h * act, 0)
    return held + rotary + embedding_mask + head


def logits_bytes(model: Model, workload: Workload, k: KnobArrays, stage: Stage = Stage.LAST) -> IntArray:
    """Logits of one micro-batch at their peak, in the loss's backward, on the
    last stage (s*b*V/t each; vocab-parallel under TP, Megatron-LM Sec. 3), by
    the stack's cross-entropy (`LossKernel`):

    - FULL, eager PyTorch (HF `ForCausalLMLoss`, torchtitan without compile):
      the LM head output in the working dtype, the fp32 log-probabilities
      cross-entropy saves, and two fp32 gradients (of the log-probabilities and
      of the fp32 logits) while the backward runs;
    - FUSED (Megatron's vocab-parallel cross-entropy, flash-attn's or a
      compiled loss): one fp32 tensor (Megatron computes the softmax in place in
      its fp32 copy and writes the gradient into it) and the 16-bit output and
      its 16-bit gradient;
    - CHUNKED (torchtune): every chunk's output in the working dtype stays
      until its backward; the fp32 tensors and the output's gradient exist
      for one of LOSS_CHUNKS chunks at a time;
    - FUSED_LINEAR (Liger FusedLinearCrossEntropy): the head and loss run over
      chunks of 2^ceil(log2(ceil(tokens / ceil(V/h)))) tokens, each chunk's
      fp32 logits and gradient at a time; the hidden states' gradient is
      computed in forward and kept (the head's weight gradient, also computed
      in forward, is the gradient the model states already count).
    Not in the seeds' accounting.
    """
    if workload.accounting is Accounting.SEED:
        return np.zeros_like(k.tp)
    act = ACT_BYTES[k.precision]
    tokens = local_tokens(workload, k)
    vocab = ceil_div(model.vocab_size, k.tp)
    elements = tokens * vocab
    if workload.loss is LossKernel.CHUNKED:
        logits = elements * act + ceil_div(elements * (act + 3 * FP32), LOSS_CHUNKS)
    elif workload.loss is LossKernel.FUSED:
        logits = elements * (2 * act + FP32)
    elif workload.loss is LossKernel.FUSED_LINEAR:
        ratio = -(-model.vocab_size // model.hidden_size)
        chunk = np.minimum(tokens, 2 ** np.ceil(np.log2(np.maximum(ceil_div(tokens, ratio), 1))).astype(np.int64))
        logits = chunk * vocab * 2 * FP32 + tokens * model.hidden_size * act
    else:
        logits = elements * (act + 3 * FP32)
    return np.where((k.pp == 1) | (stage is Stage.LAST), logits, 0)
