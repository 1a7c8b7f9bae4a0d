"""Architectures and planner predictions for bench/gpu_peak.py (torch-free, so tests can use them).

`predict` is what the planner says for one measured configuration: the
`fsdp` framework profile (plain PyTorch: fp32 parameters with autocast, or
pure 16-bit; one process, so no DDP buckets), no margins but fragmentation.
"""

from __future__ import annotations

import dataclasses

from results_csv import refresh_predictions

from planner.architecture import param_counts
from planner.grid import KnobArrays
from planner.memory import MemoryBreakdown, breakdown
from planner.profiles import PROFILES
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


@dataclasses.dataclass(frozen=True)
class Arch:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    gated: bool  # Llama-style (RMSNorm, SwiGLU, RoPE) or GPT-2-style (LayerNorm, GeLU, learned positions)


ARCHS = (
    Arch("llama-1.1b", hidden=2048, layers=16, heads=16, kv_heads=4, ffn=5632, vocab=32000, gated=True),
    Arch("llama-3b", hidden=3072, layers=24, heads=24, kv_heads=8, ffn=8192, vocab=32000, gated=True),
    Arch("gpt2-760m", hidden=1536, layers=24, heads=16, kv_heads=16, ffn=6144, vocab=50257, gated=False),
)
# CPU-sized: the whole --device cpu sweep runs in minutes on two cores.
CPU_ARCHS = (
    Arch("llama-cpu", hidden=512, layers=4, heads=8, kv_heads=2, ffn=1408, vocab=32000, gated=True),
    Arch("gpt2-cpu", hidden=512, layers=4, heads=8, kv_heads=8, ffn=2048, vocab=50257, gated=False),
)
# Deeper, with a small vocabulary: activations dominate the step (as at GPU scale) instead of the logits.
CPU_DEEP_ARCHS = (
    Arch("llama-deep", hidden=512, layers=8, heads=8, kv_heads=2, ffn=1408, vocab=2048, gated=True),
    Arch("gpt2-deep", hidden=512, layers=8, heads=8, kv_heads=8, ffn=2048, vocab=2048, gated=False),
)
SMOKE_ARCHS = (
    Arch("llama-toy", hidden=128, layers=2, heads=4, kv_heads=2, ffn=352, vocab=1000, gated=True),
    Arch("gpt2-toy", hidden=128, layers=2, heads=4, kv_heads=4, ffn=512, vocab=1000, gated=False),
)
ARCH_BY_NAME = {a.name: a for a in ARCHS + CPU_ARCHS + CPU_DEEP_ARCHS + SMOKE_ARCHS}


def spec(arch: Arch, seq_len: int) -> Model:
    """The planner's Model for the same architecture (dropout off, as built)."""
    return Model(
        id=arch.name, name=arch.name, aliases=(), family="bench", hidden_size=arch.hidden, num_layers=arch.layers,
        num_heads=arch.heads, num_kv_heads=arch.kv_heads, head_dim=arch.hidden // arch.heads, attention_width=arch.hidden,
        ffn_size=arch.ffn, ffn_matrices=3 if arch.gated else 2, ffn_activation="swiglu" if arch.gated else "gelu-tanh",
        vocab_size=arch.vocab, tied_embeddings=not arch.gated, learned_positions=0 if arch.gated else max(seq_len, 1024),
        norm=Norm.RMSNORM if arch.gated else Norm.LAYERNORM, norms_per_layer=2, embedding_norm=False,
        qkv_bias=not arch.gated, linear_bias=not arch.gated, parallel_block=False, dropout=False,
        default_seq_len=seq_len, max_seq_len=max(seq_len, 1024), moe=None, published_params=0, published_label="",
        source="bench",
    )


def predicted_breakdown(arch: Arch, precision: Precision, optimizer: Optimizer, recompute: Recompute, attention: str,
                        micro_batch: int, seq_len: int, fragmentation_pct: float) -> MemoryBreakdown:
    """The planner's breakdown for one measured configuration (one row)."""
    model = spec(arch, seq_len)
    kernel = AttentionKernel.FLASH if attention == "sdpa" else AttentionKernel.EAGER
    margins = Margins(0, fragmentation_pct, PROFILES["fsdp"].margins.cached_pct, 0)  # the allocator's slack, no overhead
    w = Workload(seq_len, None, Accounting.FULL, kernel, Framework.FSDP, margins)
    k = KnobArrays.from_knobs([Knobs("gpu", precision, optimizer, recompute, 0, 1, 1, micro_batch)], ["gpu"])
    return breakdown(model, param_counts(model), w, k)


def predict(arch: Arch, precision: Precision, optimizer: Optimizer, recompute: Recompute, attention: str,
            micro_batch: int, seq_len: int, fragmentation_pct: float) -> tuple[int, int]:
    """(allocated, reserved) the planner predicts: fsdp profile, one process, no margins but the allocator's
    slack (fragmentation and the profile's cached share: what max_memory_reserved holds beyond allocated)."""
    b = predicted_breakdown(arch, precision, optimizer, recompute, attention, micro_batch, seq_len, fragmentation_pct)
    return int(b.allocated[0]), int(b.reserved[0])


def predict_row(row: dict[str, str], fragmentation_pct: float) -> tuple[int, int]:
    """`predict` for a row of bench/results/gpu_peak.csv or cpu_peak.csv."""
    return predict(ARCH_BY_NAME[row["arch"]], Precision(row["precision"]), Optimizer(row["optimizer"]),
                   Recompute(row["recompute"]), row["attention"], int(row["micro_batch"]), int(row["seq_len"]),
                   fragmentation_pct)


def refresh(path: str) -> int:
    """Recompute the predicted columns of a results CSV with the current planner, keeping the measurements
    (after a change to the memory model: `python bench/peak_specs.py bench/results/cpu_peak.csv`)."""
    from planner.request import DEFAULT_FRAGMENTATION_PCT

    def predicted(row: dict[str, str]) -> dict[str, int]:
        allocated, reserved = predict_row(row, DEFAULT_FRAGMENTATION_PCT)
        return {"predicted_allocated_bytes": allocated, "predicted_reserved_bytes": reserved}

    return refresh_predictions(path, predicted)


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:]:
        print(f"{name}: {refresh(name)} rows refreshed")
