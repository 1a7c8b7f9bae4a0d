"""Parameter tensors of a transformer, derived from its architecture.

One list of tensors is the single source for the parameter count, for what
tensor parallelism shards, for the largest block (what ZeRO-3/FSDP gathers at
once) and for optimizer states whose size depends on tensor shapes
(Adafactor's factored moments, bitsandbytes' small-tensor fallback).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from planner.grid import IntArray
from planner.specs import Model, Norm

# bitsandbytes keeps fp32 states for tensors below this many elements
# (`min_8bit_size=4096` in bnb.optim) and quantizes the rest in blocks of 256
# elements with one fp32 absmax per block and state (csrc BLOCKSIZE_2STATE).
BNB_MIN_8BIT_NUMEL = 4096
BNB_BLOCK_NUMEL = 256


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    rows: int
    cols: int  # 1 for a vector
    count: int  # identical tensors in the model
    tp_sharded: bool  # split across tensor-parallel ranks (Megatron column/row/vocab parallel)

    @property
    def numel(self) -> int:
        return self.rows * self.cols

    @property
    def params(self) -> int:
        return self.numel * self.count


@dataclass(frozen=True, slots=True)
class ParamCounts:
    """Aggregates of the tensor list that the memory model needs."""

    total: int
    tp_sharded: int  # matrices split by TP (attention, FFN, experts, vocab embedding/head)
    replicated: int  # kept whole on every TP rank (norms, row-parallel biases, position table)
    block_sharded: int  # the largest transformer block, TP-split part
    block_replicated: int  # the largest transformer block, replicated part
    embedding_sharded: int  # token embedding (vocab-parallel)
    embedding_replicated: int  # learned position table and an embedding norm
    head_sharded: int  # untied LM head (0 when tied to the embedding)
    final_norm: int
    largest_tensor: int  # elements of the largest single parameter tensor
    routed_experts: int  # parameters of routed MoE experts (what expert parallelism splits)
    block_routed_experts: int  # the same, in the largest block
    bnb_small: int  # parameters in tensors bitsandbytes keeps in fp32 states
    bnb_blocks: int  # 256-element quantization blocks over the other tensors
    adafactor_state: int  # elements of Adafactor's factored second moment

    @property
    def block_max(self) -> int:
        """Parameters of the largest transformer block (what ZeRO-3/FSDP gathers at once)."""
        return self.block_sharded + self.block_replicated

    @property
    def embedding(self) -> int:
        return self.embedding_sharded + self.embedding_replicated


def _norm_vectors(model: Model) -> int:
    return 2 if model.norm is Norm.LAYERNORM else 1


def param_tensors(model: Model) -> tuple[Tensor, ...]:
    """Every parameter tensor, grouped by shape.

    Counts embeddings (token, learned positions), per-layer attention
    (`attention_tensors`: q, k, v, o with grouped-query k/v widths, or MLA), FFN (2 or 3 matrices) or MoE experts
    plus router, norms (LayerNorm has weight and bias), biases where the
    architecture has them, the final norm and an untied LM head. Matches the
    published exact counts (see catalogs/models.toml `published_params`).
    """
    h, n_layers = model.hidden_size, model.num_layers
    nv = _norm_vectors(model)
    moe = model.moe
    dense_layers = n_layers if moe is None else moe.dense_layers
    moe_layers = n_layers - dense_layers
    t = [Tensor("embedding", model.vocab_size, h, 1, True)]
    if model.learned_positions:
        t.append(Tensor("position_embedding", model.learned_positions, h, 1, False))
    if model.embedding_norm:
        t.append(Tensor("embedding_norm", h, 1, nv, False))
    t += attention_tensors(model, n_layers)
    t.append(Tensor("norm", h, 1, nv * model.norms_per_layer * n_layers, False))
    ffn_in = model.ffn_matrices - 1  # matrices reading the hidden state
    if dense_layers:
        t.append(Tensor("ffn", h, model.ffn_size, model.ffn_matrices * dense_layers, True))
        if model.linear_bias:
            t.append(Tensor("ffn.in_bias", model.ffn_size, 1, ffn_in * dense_layers, True))
            t.append(Tensor("ffn.out_bias", h, 1, dense_layers, False))
    if moe is not None and moe_layers:
        t.append(Tensor("moe.router", h, moe.num_experts, moe_layers, False))
        if moe.router_bias:
            t.append(Tensor("moe.router_bias", moe.num_experts, 1, moe_layers, False))
        t.append(Tensor("moe.expert", h, moe.expert_ffn_size, model.ffn_matrices * moe.num_experts * moe_layers, True))
        if moe.shared_experts:
            t.append(Tensor("moe.shared_expert", h, moe.expert_ffn_size, model.ffn_matrices * moe.shared_experts * moe_layers, True))
    t.append(Tensor("final_norm", h, 1, nv, False))
    if not model.tied_embeddings:
        t.append(Tensor("lm_head", h, model.vocab_size, 1, True))
    return tuple(t)


def attention_tensors(model: Model, layers: int) -> list[Tensor]:
    """The attention's parameter tensors over `layers` blocks.

    Standard: q, k, v (grouped-query k/v widths), o, optional qkv and o
    biases. MLA (DeepSeek-V2 Sec. 2.1.1; `Model.mla`): q down-projection,
    its RMSNorm and up-projection (or one q projection without a q latent),
    the joint k/v down-projection with the decoupled RoPE key, its RMSNorm,
    the k/v up-projection and o. Megatron splits the up-projections and o
    over TP and keeps the down-projections whole on every rank."""
    h, mla = model.hidden_size, model.mla
    t: list[Tensor] = []
    if mla is None:
        qw, kvw = model.attention_width, model.kv_width
        t += [Tensor("attn.q", h, qw, layers, True), Tensor("attn.kv", h, kvw, 2 * layers, True),
              Tensor("attn.o", qw, h, layers, True)]
        if model.qkv_bias:
            t.append(Tensor("attn.qkv_bias", qw + 2 * kvw, 1, layers, True))
    else:
        heads = model.num_heads
        q_out = heads * mla.qk_head_dim
        if mla.q_lora_rank:
            t += [Tensor("attn.q_a", h, mla.q_lora_rank, layers, False), Tensor("attn.q_a_norm", mla.q_lora_rank, 1, layers, False),
                  Tensor("attn.q_b", mla.q_lora_rank, q_out, layers, True)]
        else:
            t.append(Tensor("attn.q", h, q_out, layers, True))
        t += [Tensor("attn.kv_a", h, mla.kv_lora_rank + mla.qk_rope_head_dim, layers, False),
              Tensor("attn.kv_a_norm", mla.kv_lora_rank, 1, layers, False),
              Tensor("attn.kv_b", mla.kv_lora_rank, heads * (mla.qk_nope_head_dim + mla.v_head_dim), layers, True),
              Tensor("attn.o", heads * mla.v_head_dim, h, layers, True)]
    if model.qk_norm:
        t.append(Tensor("attn.qk_norm", model.head_dim, 1, 2 * layers, False))
    if model.linear_bias:
        t.append(Tensor("attn.o_bias", h, 1, layers, False))
    return t


def attention_matrix_params(model: Model) -> int:
    """Weights of one block's attention projections (the matrices a token multiplies through)."""
    return sum(x.params for x in attention_tensors(model, 1) if x.cols > 1)


def attention_score_width(model: Model) -> int:
    """Width of q and k per token over all heads (QK^T's inner dimension x heads): the
    attention width, or heads x (nope + rope) head dims under MLA."""
    return model.num_heads * model.mla.qk_head_dim if model.mla else model.attention_width


def _block_parts(model: Model) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], int]:
    """(TP-split, replicated) parameters of one block's pieces: the attention with the
    block's norms, a dense FFN, an MoE FFN without its routed experts (shared experts,
    router), and the routed experts' count (0 for a dense model)."""
    h, f, m = model.hidden_size, model.ffn_size, model.ffn_matrices
    attention = attention_tensors(model, 1)
    attn = (sum(x.params for x in attention if x.tp_sharded),
            h * _norm_vectors(model) * model.norms_per_layer + sum(x.params for x in attention if not x.tp_sharded))
    dense = (m * h * f + model.linear_bias * (m - 1) * f, model.linear_bias * h)
    moe = model.moe
    if moe is None:
        return attn, dense, (0, 0), 0
    fixed = (m * h * moe.expert_ffn_size * moe.shared_experts, (h + moe.router_bias) * moe.num_experts)
    return attn, dense, fixed, m * h * moe.expert_ffn_size * moe.num_experts


def _block_params(model: Model) -> tuple[int, int]:
    """(TP-split, replicated) parameters of the largest transformer block (dense or MoE)."""
    attn, dense, fixed, routed = _block_parts(model)
    if model.moe is None:
        return attn[0] + dense[0], attn[1] + dense[1]
    ffn = max((fixed[0] + routed, fixed[1]), dense if model.moe.dense_layers else (0, 0), key=sum)
    return attn[0] + ffn[0], attn[1] + ffn[1]


def block_params_per_ep_rank(model: Model, ep: npt.ArrayLike) -> IntArray:
    """Parameters of the largest block one expert-parallel rank holds (what ZeRO-3/FSDP
    gathers at once): a dense block, or an MoE block with its routed experts split over EP
    (shared experts and the router whole). Equals `ParamCounts.block_max` at EP 1."""
    attn, dense, fixed, routed = _block_parts(model)
    ep = np.asarray(ep, dtype=np.int64)
    with_dense = sum(attn) + sum(dense)
    if model.moe is None:
        return np.full_like(ep, with_dense)
    local = sum(attn) + sum(fixed) + -(-routed // ep)
    return np.maximum(local, with_dense) if model.moe.dense_layers else local


@cache
def param_counts(model: Model) -> ParamCounts:
    tensors = param_tensors(model)
    total = sum(x.params for x in tensors)
    sharded = sum(x.params for x in tensors if x.tp_sharded)
    small = sum(x.params for x in tensors if x.numel < BNB_MIN_8BIT_NUMEL)
    blocks = sum(-(-x.numel // BNB_BLOCK_NUMEL) * x.count for x in tensors if x.numel >= BNB_MIN_8BIT_NUMEL)
    # Adafactor (Shazeer & Stern 2018, Alg. 4): a matrix keeps a row and a
    # column accumulator; a vector keeps its full second moment.
    factored = sum((x.rows + x.cols if x.cols > 1 else x.rows) * x.count for x in tensors)
    named = {x.name: x.params for x in tensors}
    block_sharded, block_replicated = _block_params(model)
    return ParamCounts(
        total=total,
        tp_sharded=sharded,
        replicated=total - sharded,
        block_sharded=block_sharded,
        block_replicated=block_replicated,
        embedding_sharded=named["embedding"],
        embedding_replicated=named.get("position_embedding", 0) + named.get("embedding_norm", 0),
        head_sharded=named.get("lm_head", 0),
        final_norm=named["final_norm"],
        largest_tensor=max(x.numel for x in tensors),
        routed_experts=named.get("moe.expert", 0),
        block_routed_experts=named.get("moe.expert", 0) // max(1, model.num_layers - (model.moe.dense_layers if model.moe else 0)),
        bnb_small=small,
        bnb_blocks=blocks,
        adafactor_state=factored,
    )


def linear_shapes(model: Model) -> tuple[tuple[str, int, int, int], ...]:
    """(group, in, out, count per block) of the linear layers in the largest block:
    'attn' for q, k, v, o; 'mlp' for the FFN or every expert's FFN."""
    h = model.hidden_size
    shapes = [("attn", x.rows, x.cols, x.count) for x in attention_tensors(model, 1) if x.cols > 1]
    moe = model.moe
    f = model.ffn_size if moe is None else moe.expert_ffn_size
    copies = 1 if moe is None else moe.num_experts + moe.shared_experts
    if model.ffn_matrices == 3:
        shapes += [("mlp", h, f, 2 * copies), ("mlp", f, h, copies)]
    else:
        shapes += [("mlp", h, f, copies), ("mlp", f, h, copies)]
    return tuple(shapes)


def adapter_params_per_block(model: Model, rank: int, targets: str) -> int:
    """LoRA parameters one block adds (Hu et al. 2021): rank x (in + out) per
    adapted linear layer; targets 'attn', 'mlp' (experts included) or 'all'."""
    return sum(rank * (i + o) * n for group, i, o, n in linear_shapes(model) if targets in ("all", group))
