"""Planner specs of the blocks bench/saved_tensors.py measures (torch-free, so tests can use them)."""

from __future__ import annotations

from planner.activations import layer_activation_bytes, rotary_table_bytes
from planner.grid import KnobArrays
from planner.specs import (
    Accounting,
    AttentionKernel,
    Framework,
    Knobs,
    Margins,
    Model,
    Norm,
    Optimizer,
    Precision,
    Recompute,
    Workload,
)

HIDDEN, HEADS, FFN_GATED, SEQ, BATCH = 1024, 8, 2816, 256, 2
PRECISION = {"bfloat16": Precision.BF16_MIXED, "float32": Precision.FP32}
ATTENTION = {"sdpa": AttentionKernel.FLASH, "eager": AttentionKernel.EAGER}


def spec(**arch: object) -> Model:
    """A planner Model with the block's shape (embedding-level fields do not matter per layer)."""
    base: dict[str, object] = {
        "id": "bench", "name": "bench", "aliases": (), "family": "bench", "hidden_size": HIDDEN, "num_layers": 1, "num_heads": HEADS,
        "num_kv_heads": HEADS, "head_dim": HIDDEN // HEADS, "attention_width": HIDDEN, "ffn_size": FFN_GATED, "ffn_matrices": 3,
        "ffn_activation": "swiglu", "vocab_size": 1000, "tied_embeddings": False, "learned_positions": 0, "norm": Norm.RMSNORM,
        "norms_per_layer": 2, "embedding_norm": False, "qkv_bias": False, "linear_bias": False, "parallel_block": False, "dropout": False,
        "default_seq_len": SEQ, "max_seq_len": SEQ, "moe": None, "published_params": 0, "published_label": "", "source": "bench",
    }
    base.update(arch)
    return Model(**base)  # type: ignore[arg-type]


BLOCKS: dict[str, Model] = {
    "llama-mha": spec(),
    "llama-gqa4": spec(num_kv_heads=2),
    "qwen2-gqa4": spec(num_kv_heads=2, qkv_bias=True),
    "qwen3-gqa4": spec(num_kv_heads=2, qk_norm=True),
    "gpt2": spec(ffn_size=4 * HIDDEN, ffn_matrices=2, ffn_activation="gelu-tanh", norm=Norm.LAYERNORM, qkv_bias=True,
                 linear_bias=True, learned_positions=SEQ),
}


def predicted_bytes(block: str, dtype: str, attention: str, seq_len: int = SEQ, micro_batch: int = BATCH) -> int:
    """One block's activations under the PyTorch profile, plus the rotary tables a one-layer model saves once."""
    model = BLOCKS[block]
    w = Workload(seq_len, None, Accounting.FULL, ATTENTION[attention], Framework.DEEPSPEED, Margins(0, 0))
    k = KnobArrays.from_knobs([Knobs("cpu", PRECISION[dtype], Optimizer.ADAMW, Recompute.NONE, 0, 1, 1, micro_batch)], ["cpu"])
    return int(layer_activation_bytes(model, w, k)[0] + rotary_table_bytes(model, w, k)[0])
