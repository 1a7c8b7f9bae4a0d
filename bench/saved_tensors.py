"""Measure what autograd saves for backward in one transformer block, and
compare it with the planner's activation model (planner.activations.layer_activation_bytes).

Builds Hugging Face blocks from a config with random weights (no downloads),
runs one forward pass under torch.autograd.graph.saved_tensors_hooks and sums
the distinct storages saved, parameters excluded. Runs on CPU; CUDA keeps
dropout masks as 1-byte bools where the CPU kernel keeps them in the working
dtype, so the blocks measured here have dropout off.

Needs torch and transformers, which the planner itself does not:
    python -m venv /tmp/bench && . /tmp/bench/bin/activate
    pip install torch==2.13.0 transformers && pip install -e .
    python bench/saved_tensors.py            # writes bench/results/saved_tensors.csv
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch
import transformers
from blocks import BATCH, FFN_GATED, HEADS, HIDDEN, SEQ, predicted_bytes
from results_csv import write_results
from transformers import GPT2Config, LlamaConfig, Qwen2Config, Qwen3Config
from transformers.models.gpt2.modeling_gpt2 import GPT2Block
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2RotaryEmbedding
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RotaryEmbedding

from planner import __version__

RESULTS = Path(__file__).parent / "results" / "saved_tensors.csv"
DTYPES = (torch.bfloat16, torch.float32)
ATTENTION = ("sdpa", "eager")


def saved_bytes(module: torch.nn.Module, run: Callable[[], object]) -> int:
    """Bytes of distinct storages autograd saves during `run`, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


def rope_block(layer_cls: type, rope_cls: type, config: object, dtype: torch.dtype, attention: str) -> int:
    config._attn_implementation = attention  # type: ignore[attr-defined]
    layer = layer_cls(config, 0).to(dtype).train()
    rope = rope_cls(config)
    x = torch.randn(BATCH, SEQ, HIDDEN, dtype=dtype, requires_grad=True)
    pos = torch.arange(SEQ).unsqueeze(0).expand(BATCH, SEQ)
    cos, sin = rope(x, pos)
    mask = None
    if attention == "eager":
        mask = torch.full((SEQ, SEQ), float("-inf"), dtype=dtype).triu(1)[None, None].expand(BATCH, 1, SEQ, SEQ)
    return saved_bytes(layer, lambda: layer(x, attention_mask=mask, position_embeddings=(cos, sin), position_ids=pos))


def llama(kv: int) -> Callable[[torch.dtype, str], int]:
    cfg = LlamaConfig(hidden_size=HIDDEN, intermediate_size=FFN_GATED, num_attention_heads=HEADS, num_key_value_heads=kv,
                      num_hidden_layers=1, vocab_size=1000)
    return lambda dtype, attn: rope_block(LlamaDecoderLayer, LlamaRotaryEmbedding, cfg, dtype, attn)


def qwen2(kv: int) -> Callable[[torch.dtype, str], int]:
    cfg = Qwen2Config(hidden_size=HIDDEN, intermediate_size=FFN_GATED, num_attention_heads=HEADS, num_key_value_heads=kv,
                      num_hidden_layers=1, vocab_size=1000)
    return lambda dtype, attn: rope_block(Qwen2DecoderLayer, Qwen2RotaryEmbedding, cfg, dtype, attn)


def qwen3(kv: int) -> Callable[[torch.dtype, str], int]:
    cfg = Qwen3Config(hidden_size=HIDDEN, intermediate_size=FFN_GATED, num_attention_heads=HEADS, num_key_value_heads=kv,
                      head_dim=HIDDEN // HEADS, num_hidden_layers=1, vocab_size=1000)
    return lambda dtype, attn: rope_block(Qwen3DecoderLayer, Qwen3RotaryEmbedding, cfg, dtype, attn)


def gpt2() -> Callable[[torch.dtype, str], int]:
    def run(dtype: torch.dtype, attention: str) -> int:
        cfg = GPT2Config(n_embd=HIDDEN, n_head=HEADS, n_layer=1, vocab_size=1000, resid_pdrop=0.0, attn_pdrop=0.0,
                         embd_pdrop=0.0, bos_token_id=0, eos_token_id=0)
        cfg._attn_implementation = attention
        block = GPT2Block(cfg).to(dtype).train()
        x = torch.randn(BATCH, SEQ, HIDDEN, dtype=dtype, requires_grad=True)
        return saved_bytes(block, lambda: block(x))

    return run


BLOCKS = {"llama-mha": llama(HEADS), "llama-gqa4": llama(2), "qwen2-gqa4": qwen2(2), "qwen3-gqa4": qwen3(2), "gpt2": gpt2()}


def main() -> int:
    rows = []
    for name, run in BLOCKS.items():
        for dtype in DTYPES:
            for attention in ATTENTION:
                measured = run(dtype, attention)
                model = predicted_bytes(name, str(dtype).removeprefix("torch."), attention)
                rows.append({
                    "block": name, "dtype": str(dtype).removeprefix("torch."), "attention": attention,
                    "seq_len": SEQ, "micro_batch": BATCH, "hidden": HIDDEN,
                    "measured_bytes": measured, "predicted_bytes": model,
                    "error_pct": round(100 * (model - measured) / measured, 2),
                })
    write_results(RESULTS, [(f"# planner {__version__}, torch {torch.__version__}, transformers {transformers.__version__}, "
                            f"{platform.machine()} CPU, {date.today().isoformat()}; error = (predicted - measured) / measured")], rows)
    for r in rows:
        print(f"{r['block']:12} {r['dtype']:9} {r['attention']:6} measured {r['measured_bytes']:>11,} "
              f"predicted {r['predicted_bytes']:>11,}  {r['error_pct']:+6.2f}%")
    worst_under = min(r["error_pct"] for r in rows)
    print(f"worst under-prediction: {worst_under:+.2f}%  (negative = unsafe)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
