"""Serving memory per GPU: weights by storage format, the KV cache, the prefill
workspace and the sampler's logits. Integer bytes, numpy-vectorized over knob
arrays, like the training model (the batch is `micro_batch`, the context is
the workload's `seq_len`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from planner.architecture import ParamCounts, linear_shapes
from planner.grid import IntArray, KnobArrays, ceil_div
from planner.inference import WEIGHT_FORMAT_BITS
from planner.specs import KV_FORMATS, WEIGHT_FORMATS, Accounting, KvFormat, Model, WeightFormat, Workload
from planner.states import Stage, stage_layers


def _table(values: dict, order: tuple) -> IntArray:
    return np.array([values[v] for v in order], dtype=np.int64)


# Bits per stored weight of the quantized linear layers, scales included, x BLOCK_WEIGHTS (16,384
# weights: a whole number of GPTQ groups and of bitsandbytes' second-level absmax blocks):
# - 16-bit and fp8 carry no per-group data;
# - int8 and int4 as GPTQ/AWQ store an fp16 scale per group of 128 weights, int4 also a packed 4-bit
#   zero point (AutoGPTQ / AutoAWQ layouts, group_size 128);
# - nf4/fp4 (bitsandbytes `quantize_4bit`, blocksize 64): two 4-bit codes per byte and an fp32 absmax
#   per 64 weights, 4.5 bits; -dq (`compress_statistics`, QLoRA's double quantization, Dettmers et al.
#   2023 Sec. 3): the absmax values 8-bit blockwise-quantized in blocks of 256 with one fp32 constant
#   each, 4 + 8/64 + 32/16384 = 4.127 bits;
# - llm-int8 (bitsandbytes `Int8Params`, LLM.int8(), Dettmers et al. 2022 Sec. 3.2): one byte per
#   weight; its fp32 scale per output row is per row, not per weight (`llm_int8_row_scale_bytes`).
# The 16-bit codebooks and quant-state scalars (under 2 KB per layer) are left out.
BLOCK_WEIGHTS = 16384
GROUP = 128  # GPTQ/AWQ group size
BNB_BLOCK = 64  # bitsandbytes 4-bit blocksize
BNB_DQ_BLOCK = 256  # absmax values per fp32 constant under double quantization
_BNB4 = 4 * BLOCK_WEIGHTS + 32 * (BLOCK_WEIGHTS // BNB_BLOCK)
_BNB4_DQ = 4 * BLOCK_WEIGHTS + 8 * (BLOCK_WEIGHTS // BNB_BLOCK) + 32 * (BLOCK_WEIGHTS // (BNB_BLOCK * BNB_DQ_BLOCK))
BITS_X16384: dict[WeightFormat, int] = {
    WeightFormat.FP32: 32 * BLOCK_WEIGHTS,
    WeightFormat.FP16: 16 * BLOCK_WEIGHTS,
    WeightFormat.BF16: 16 * BLOCK_WEIGHTS,
    WeightFormat.FP8: 8 * BLOCK_WEIGHTS,
    WeightFormat.INT8: (8 * GROUP + 16) * (BLOCK_WEIGHTS // GROUP),
    WeightFormat.INT4: (4 * GROUP + 16 + 4) * (BLOCK_WEIGHTS // GROUP),
    WeightFormat.NF4: _BNB4,
    WeightFormat.NF4_DQ: _BNB4_DQ,
    WeightFormat.FP4: _BNB4,
    WeightFormat.FP4_DQ: _BNB4_DQ,
    WeightFormat.LLM_INT8: 8 * BLOCK_WEIGHTS,
}
_BITS = _table(BITS_X16384, WEIGHT_FORMATS)
SEED_BITS = _table(WEIGHT_FORMAT_BITS, WEIGHT_FORMATS)  # the seeds: every parameter at the format's width
KV_BYTES = _table({KvFormat.BF16: 2, KvFormat.FP16: 2, KvFormat.FP8: 1}, KV_FORMATS)
_FP32 = WEIGHT_FORMATS.index(WeightFormat.FP32)
_LLM_INT8 = WEIGHT_FORMATS.index(WeightFormat.LLM_INT8)
PREFILL_CHUNK_TOKENS = 8192  # vLLM's chunked-prefill budget (max_num_batched_tokens) in recent releases
LOGIT_BYTES = 4  # the sampler works on fp32 logits


def serving_weights_bytes(counts: ParamCounts, model: Model, k: KnobArrays, accounting: Accounting, stage: Stage) -> IntArray:
    """Weights one GPU holds: the stage's transformer blocks split by TP,
    their linear layers in the chosen format (`BITS_X16384`, plus LLM.int8()'s
    row scales); embeddings, LM head, norms and biases stay 16-bit (fp32 when
    serving fp32), as GPTQ/AWQ checkpoints and vLLM keep them and as
    bitsandbytes quantizes only the decoder's nn.Linear layers (transformers
    keeps lm_head out, `llm_int8_skip_modules`). Seed accounting: every
    parameter at the format's width, nothing else (seeds 000/001: 7B fp16
    14 GB, int4 3.5 GB)."""
    whole = k.pp == 1
    layers = stage_layers(model, k)
    ends_sharded = counts.embedding_sharded + counts.head_sharded
    block_matrices = np.where(whole, counts.tp_sharded - ends_sharded, layers * counts.block_sharded)
    rest_sharded = np.where(whole, ends_sharded, counts.embedding_sharded if stage is Stage.FIRST else (counts.head_sharded or counts.embedding_sharded))
    rest_replicated = np.where(
        whole,
        counts.replicated,
        layers * counts.block_replicated + (counts.embedding_replicated if stage is Stage.FIRST else counts.final_norm),
    )
    if accounting is Accounting.SEED:
        every = ceil_div(block_matrices + rest_sharded, k.tp) + rest_replicated
        return ceil_div(every * SEED_BITS[k.weight_format], 8)
    quantized = ceil_div(ceil_div(block_matrices, k.tp) * _BITS[k.weight_format], 8 * BLOCK_WEIGHTS)
    scales = np.where(k.weight_format == _LLM_INT8, llm_int8_row_scale_bytes(model, layers, k.tp), 0)
    rest_bytes = np.where(k.weight_format == _FP32, 4, 2)
    return quantized + scales + (ceil_div(rest_sharded, k.tp) + rest_replicated) * rest_bytes


def llm_int8_row_scale_bytes(model: Model, layers: npt.ArrayLike, tp: npt.ArrayLike) -> IntArray:
    """LLM.int8()'s fp32 scale per output row of every quantized linear layer (bitsandbytes
    `Int8Params.SCB`, the row statistics `int8_mm_dequant` takes in fp32; Dettmers et al. 2022
    Sec. 3.2, vector-wise quantization), counted over `layers` largest blocks (every expert of an
    MoE block) and split by TP. Row-parallel layers keep every row on each rank; counting them
    split leaves out at most 2 x hidden x 4 bytes per layer. The fp16 outlier columns of the
    mixed-precision decomposition are dequantized per forward (a workspace, not stored)."""
    rows = sum(out * n for _, _, out, n in linear_shapes(model))
    return 4 * ceil_div(np.asarray(layers, dtype=np.int64) * rows, tp)


def kv_cache_bytes(model: Model, workload: Workload, k: KnobArrays) -> IntArray:
    """2 (K and V) x layers x KV heads x head_dim x bytes x tokens, for the batch at full context:
    grouped- and multi-query attention store only the KV heads; TP splits them, PP the layers
    (vLLM's cache per token: 2 x L x kv_heads x head_dim x dtype bytes); MLA caches its
    latent instead, see `kv_values_per_token_layer`."""
    layers = stage_layers(model, k)
    return layers * kv_values_per_token_layer(model, k.tp) * KV_BYTES[k.kv_format] * workload.seq_len * k.micro_batch


def kv_values_per_token_layer(model: Model, tp: npt.ArrayLike) -> IntArray:
    """Values one GPU caches per token and layer: K and V of its 1/TP of the KV heads, or
    under MLA the k/v latent and the shared RoPE key, kv_lora_rank + qk_rope_head_dim (576
    for DeepSeek-V3), whole on every TP rank (vLLM's MLA cache)."""
    if model.mla is not None:
        return np.full_like(np.asarray(tp, dtype=np.int64), model.mla.kv_lora_rank + model.mla.qk_rope_head_dim)
    return 2 * ceil_div(model.kv_width, tp)


def kv_bytes_per_token(model: Model, kv: KvFormat) -> int:
    """KV cache bytes one token needs across all layers on one unsplit GPU."""
    return model.num_layers * int(kv_values_per_token_layer(model, 1)) * int(KV_BYTES[KV_FORMATS.index(kv)])


def workspace_bytes(model: Model, workload: Workload, k: KnobArrays) -> IntArray:
    """Activations of the largest forward step: a prefill chunk of at most
    PREFILL_CHUNK_TOKENS tokens through one layer (hidden in and out, q, k, v,
    attention output, and the MLP's widest intermediates), 16-bit, split by TP."""
    tokens = np.minimum(workload.seq_len * k.micro_batch, PREFILL_CHUNK_TOKENS)
    h, qw, kvw = model.hidden_size, model.attention_width, model.kv_width
    moe = model.moe
    f = model.ffn_size if moe is None else max(model.ffn_size, moe.expert_ffn_size * (moe.top_k + moe.shared_experts))
    mlp = (3 if model.ffn_matrices == 3 else 2) * f
    return tokens * 2 * 2 * h + ceil_div(tokens * 2 * (2 * qw + 2 * kvw + mlp), k.tp)


def sampler_logits_bytes(model: Model, k: KnobArrays) -> IntArray:
    """fp32 logits of the last position of every sequence in the batch, split by TP."""
    return k.micro_batch * ceil_div(model.vocab_size, k.tp) * LOGIT_BYTES
