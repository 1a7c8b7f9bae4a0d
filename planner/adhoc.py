"""A model known only by its parameter count, in a Llama-style shape that keeps the count.

Llama-style decoder (RMSNorm, SwiGLU MLP, rotary positions, untied
32,000-token embeddings, no biases, 128-wide heads). The depth follows the
width as in the Llama 2 family (hidden / layers from 128 at 7B to 102 at 70B:
layers = hidden / 128 here), and the hidden size is the multiple of 128 whose
standard shape (FFN about 8/3 x hidden rounded up to a multiple of 256) comes
nearest to the count asked for. The FFN width is then solved for the count
itself, in steps of FFN_STEP so that every TP degree up to 8 still splits it:
the total misses the count by at most 3 x layers x hidden x FFN_STEP / 2
parameters (under 0.1 % from 125M up). Estimates for such a model carry the
shape's uncertainty; the plan names the shape and the residual.
"""

from __future__ import annotations

from planner.architecture import param_counts
from planner.errors import PlannerInputError
from planner.specs import Model, Norm

VOCAB = 32000
HEAD_DIM = 128
ASPECT = 128  # hidden size per layer
SEQ_LEN = 4096
FFN_STEP = 8  # the solved FFN width stays a multiple of every TP degree inside an 8-GPU node
MAX_RESIDUAL = 0.005  # a count the shape family cannot reach within 0.5 % is refused, not approximated
_MAX_HIDDEN = 65536


def _shape(hidden: int, ffn: int | None = None) -> Model:
    """The family's shape at `hidden`: the standard SwiGLU width unless `ffn` is given."""
    ffn = -(-(8 * hidden // 3) // 256) * 256 if ffn is None else ffn
    layers = max(1, round(hidden / ASPECT))
    heads = hidden // HEAD_DIM
    return Model(
        id="adhoc", name="", aliases=(), family="adhoc", hidden_size=hidden, num_layers=layers, num_heads=heads,
        num_kv_heads=heads, head_dim=HEAD_DIM, attention_width=hidden, ffn_size=ffn, ffn_matrices=3, ffn_activation="silu",
        vocab_size=VOCAB, tied_embeddings=False, learned_positions=0, norm=Norm.RMSNORM, norms_per_layer=2, embedding_norm=False,
        qkv_bias=False, linear_bias=False, parallel_block=False, dropout=False, default_seq_len=SEQ_LEN, max_seq_len=SEQ_LEN,
        moe=None, published_params=0, published_label="", source="",
    )


def _nearest_standard(params: int) -> Model:
    """The standard shape whose count is nearest to `params` (counts grow with the width)."""
    best, best_gap = _shape(HEAD_DIM), abs(param_counts(_shape(HEAD_DIM)).total - params)
    for hidden in range(2 * HEAD_DIM, _MAX_HIDDEN + 1, HEAD_DIM):
        m = _shape(hidden)
        total = param_counts(m).total
        if abs(total - params) < best_gap:
            best, best_gap = m, abs(total - params)
        elif total > params:
            break
    return best


def _solve_ffn(hidden: int, params: int) -> int:
    """The FFN width (a multiple of FFN_STEP, at least FFN_STEP) whose total is nearest to
    `params`: the count is linear in it, 3 x layers x hidden per unit (gate, up, down)."""
    base = param_counts(_shape(hidden, 0)).total
    per_unit = 3 * _shape(hidden, 0).num_layers * hidden
    steps = round((params - base) / (per_unit * FFN_STEP))
    return max(1, steps) * FFN_STEP


def model_with_params(params: int) -> Model:
    """A Llama-style model with `params` parameters as nearly as its integer shape allows."""
    hidden = _nearest_standard(params).hidden_size
    best = _shape(hidden, _solve_ffn(hidden, params))
    total = param_counts(best).total
    residual = (total - params) / params
    if abs(residual) > MAX_RESIDUAL:
        raise PlannerInputError(
            f"--params {params:,}: no Llama-style shape (vocab {VOCAB}, 128-wide heads) has that many parameters "
            f"within {MAX_RESIDUAL:.1%} (nearest {total:,}); describe the model with --model and a config.json or --catalog file"
        )
    name = f"ad hoc {params / 1e9:g}B"
    source = (
        f"--params {params:,}: Llama-style shape (SwiGLU, RMSNorm, untied vocab {VOCAB}, 128-wide heads) with hidden "
        f"{best.hidden_size}, {best.num_layers} layers, {best.num_heads} heads, FFN {best.ffn_size} (solved for the count): "
        f"{total:,} parameters, {total - params:+,} ({residual:+.4%}) from the count asked for"
    )
    return Model(**{**{f: getattr(best, f) for f in best.__slots__}, "id": f"adhoc-{params:g}", "name": name, "source": source})
