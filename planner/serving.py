"""Serving memory per GPU: weights by storage format, the KV cache, the prefill
workspace and the sampler's logits. Integer bytes, numpy-vectorized over knob
arrays, like the training model (the batch is `micro_batch`, the context is
the workload's `seq_len`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from planner.architecture import ParamCounts
from planner.grid import IntArray, KnobArrays, ceil_div
from planner.inference import WEIGHT_FORMAT_BITS
from planner.specs import KV_FORMATS, WEIGHT_FORMATS, Accounting, KvFormat, Model, WeightFormat, Workload
from planner.states import Stage, stage_layers


def _table(values: dict, order: tuple) -> IntArray:
    return np.array([values[v] for v in order], dtype=np.int64)


# Bits per stored weight of the quantized linear layers, scales included, x 128 (one group):
# 16-bit and fp8 carry no per-group data; int8 and int4 as GPTQ/AWQ store an fp16 scale per group of
# 128 weights, int4 also a packed 4-bit zero point (AutoGPTQ / AutoAWQ layouts, group_size 128).
GROUP = 128
BITS_PER_GROUP = _table(
    {
        WeightFormat.FP32: 32 * GROUP,
        WeightFormat.FP16: 16 * GROUP,
        WeightFormat.BF16: 16 * GROUP,
        WeightFormat.FP8: 8 * GROUP,
        WeightFormat.INT8: 8 * GROUP + 16,
        WeightFormat.INT4: 4 * GROUP + 16 + 4,
    },
    WEIGHT_FORMATS,
)
SEED_BITS = _table(WEIGHT_FORMAT_BITS, WEIGHT_FORMATS)  # the seeds: every parameter at the format's width
KV_BYTES = _table({KvFormat.BF16: 2, KvFormat.FP16: 2, KvFormat.FP8: 1}, KV_FORMATS)
_FP32 = WEIGHT_FORMATS.index(WeightFormat.FP32)
PREFILL_CHUNK_TOKENS = 8192  # vLLM's chunked-prefill budget (max_num_batched_tokens) in recent releases
LOGIT_BYTES = 4  # the sampler works on fp32 logits


def serving_weights_bytes(counts: ParamCounts, model: Model, k: KnobArrays, accounting: Accounting, stage: Stage) -> IntArray:
    """Weights one GPU holds: the stage's transformer blocks split by TP,
    their linear layers in the chosen format; embeddings, LM head, norms and
    biases stay 16-bit (fp32 when serving fp32), as GPTQ/AWQ checkpoints and
    vLLM keep them. Seed accounting: every parameter at the format's width,
    nothing else (seeds 000/001: 7B fp16 14 GB, int4 3.5 GB)."""
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
    quantized = ceil_div(ceil_div(block_matrices, k.tp) * BITS_PER_GROUP[k.weight_format], 8 * GROUP)
    rest_bytes = np.where(k.weight_format == _FP32, 4, 2)
    return quantized + (ceil_div(rest_sharded, k.tp) + rest_replicated) * rest_bytes


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
