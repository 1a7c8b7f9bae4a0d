"""Floating-point operations per token of a decoder-only transformer.

Conventions follow Narayanan et al. 2021 ("Efficient Large-Scale Language
Model Training on GPU Clusters", Eq. 3) and Chowdhery et al. 2022 (PaLM,
Appendix B), the ones published MFU figures use:

- a matrix multiply of a token through an (in x out) weight costs 2 x in x out
  FLOPs forward; the backward pass costs twice the forward (input and weight
  gradients), only the input gradient (1x) for frozen weights (LoRA, QLoRA);
- attention costs 2 x 2 x seq x attention_width FLOPs per token and layer
  forward (Q K^T and the weighted sum over V) over the full sequence, as the
  papers count it (with MLA's wider q/k heads, 2 x seq x (q/k + v widths));
  a causal kernel does about half of that work;
- embedding lookups, norms, activations and the softmax are not counted;
- model FLOPs = forward + backward; hardware FLOPs add what recomputation
  repeats: the transformer blocks' forward again (full; the LM head sits
  outside the checkpointed blocks) or the attention core's forward
  (selective). With ffn = 4h and full recomputation this is Eq. 3 of
  Narayanan et al.: 96 B s l h^2 (1 + s/6h + V/16lh) per iteration.

Mixture-of-experts layers count the experts a token visits (top-k routed plus
shared) and the router.
"""

from __future__ import annotations

from planner.architecture import attention_matrix_params, attention_score_width
from planner.specs import Mode, Model, Recompute


def linear_params_per_token(model: Model) -> int:
    """Weights one token multiplies through: every block's attention and (active)
    MLP matrices, the MoE router, and the LM head (tied or not)."""
    h = model.hidden_size
    attention = attention_matrix_params(model)
    moe = model.moe
    dense_layers = model.num_layers if moe is None else moe.dense_layers
    dense_mlp = model.ffn_matrices * h * model.ffn_size
    total = model.num_layers * attention + dense_layers * dense_mlp
    if moe is not None:
        active = model.ffn_matrices * h * moe.expert_ffn_size * (moe.top_k + moe.shared_experts)
        total += (model.num_layers - dense_layers) * (active + h * moe.num_experts)
    return total + h * model.vocab_size


def attention_flops_per_token(model: Model, seq_len: int) -> int:
    """Forward FLOPs of the attention core per token: Q K^T (over q/k head dims) and softmax x V
    (over v head dims) over the full sequence; 4 x seq x attention_width when the two agree."""
    return 2 * seq_len * (attention_score_width(model) + model.attention_width) * model.num_layers


def forward_flops_per_token(model: Model, seq_len: int) -> int:
    return 2 * linear_params_per_token(model) + attention_flops_per_token(model, seq_len)


def model_flops_per_token(model: Model, seq_len: int, mode: Mode = Mode.PRETRAIN) -> int:
    """Forward + backward, no recomputation: what MFU divides by. Frozen base weights
    (LoRA, QLoRA) need only input gradients: their matmuls cost 1x backward, not 2x."""
    linear = 2 * linear_params_per_token(model)
    attention = attention_flops_per_token(model, seq_len)
    backward_linear = 1 if mode.adapters else 2
    return linear * (1 + backward_linear) + 3 * attention


def hardware_flops_parts(model: Model, seq_len: int, recompute: Recompute, mode: Mode = Mode.PRETRAIN) -> tuple[int, int]:
    """Hardware FLOPs per token split as (the blocks' linear layers, the rest: attention
    core and LM head), so fp8 GEMMs can run the first at their own rate. Full
    recomputation repeats the blocks' forward (not the LM head's), selective the
    attention core."""
    head = 2 * model.hidden_size * model.vocab_size
    blocks = 2 * linear_params_per_token(model) - head
    attention = attention_flops_per_token(model, seq_len)
    backward_linear = 1 if mode.adapters else 2
    blocks_repeated = recompute is Recompute.FULL
    attention_repeated = recompute in (Recompute.FULL, Recompute.SELECTIVE)
    block_linear = blocks * (1 + backward_linear + blocks_repeated)
    rest = head * (1 + backward_linear) + attention * (3 + attention_repeated)
    return block_linear, rest


def hardware_flops_per_token(model: Model, seq_len: int, recompute: Recompute, mode: Mode = Mode.PRETRAIN) -> int:
    """Model FLOPs plus recomputation: full repeats the blocks' forward, selective the attention core."""
    return sum(hardware_flops_parts(model, seq_len, recompute, mode))
