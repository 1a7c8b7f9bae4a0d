"""bitsandbytes weight formats (issue 12, part 3): nf4/fp4 blockwise 4-bit with and without double
quantization (Dettmers et al. 2023, QLoRA Sec. 3; bitsandbytes `quantize_4bit`, blocksize 64) and
LLM.int8() (Dettmers et al. 2022; bitsandbytes `Int8Params`, an fp32 scale per output row). Only the
decoder's linear layers are quantized; embeddings, norms and the LM head stay 16-bit. QLoRA's frozen
base reads its NF4 layout from the same table."""

from __future__ import annotations

import json

import pytest

from planner import evaluate_config
from planner.adapters import NF4_BITS_X16384
from planner.cli import main
from planner.serving import BITS_X16384, BLOCK_WEIGHTS
from planner.specs import WeightFormat

# Llama-2-7B: 6,738,415,616 parameters; 32 blocks of q, k, v, o (4096 x 4096) and gate, up, down (4096 x 11008)
PARAMS = 6_738_415_616
EMBED_AND_HEAD = 2 * 32000 * 4096
NORMS = (2 * 32 + 1) * 4096
MATRICES = PARAMS - EMBED_AND_HEAD - NORMS
ROWS_PER_BLOCK = 4 * 4096 + 2 * 11008 + 4096  # output rows of q, k, v, o, gate, up, down


def _weights(fmt: str, tp: int = 1) -> int:
    row = evaluate_config("llama-2-7b", "a100-80g:8", mode="infer", weight_format=fmt, kv_dtype="bf16", tp=tp, pp=1, dp=1)
    return row.memory_bytes["weights"]


@pytest.mark.parametrize(
    ("fmt", "bits"),
    [
        (WeightFormat.NF4, 4 + 32 / 64),  # fp32 absmax per 64 weights: 4.5 bits
        (WeightFormat.FP4, 4 + 32 / 64),
        (WeightFormat.NF4_DQ, 4 + 8 / 64 + 32 / (64 * 256)),  # 8-bit absmax, fp32 constant per 256 of them: 4.127
        (WeightFormat.FP4_DQ, 4 + 8 / 64 + 32 / (64 * 256)),
        (WeightFormat.LLM_INT8, 8),  # plus the per-row scales, counted per row
    ],
)
def test_bits_per_weight_follow_the_bitsandbytes_layouts(fmt: WeightFormat, bits: float) -> None:
    assert BITS_X16384[fmt] / BLOCK_WEIGHTS == pytest.approx(bits)


def test_llama_2_7b_nf4_double_quantized_serving_weights() -> None:
    """6,476,005,376 linear weights at 4.127 bits = 3,340,771,328 B, plus 16-bit embeddings, head and norms."""
    assert MATRICES == 6_476_005_376
    expected = -(-MATRICES * (4 * 16384 + 8 * 256 + 32) // (8 * 16384)) + (EMBED_AND_HEAD + NORMS) * 2
    assert expected == 3_865_591_808
    assert _weights("nf4-dq") == expected


def test_nf4_without_double_quantization_holds_an_fp32_absmax_per_64_weights() -> None:
    assert _weights("nf4") == MATRICES * 9 // 16 + (EMBED_AND_HEAD + NORMS) * 2 == 4_167_573_504
    assert _weights("fp4") == _weights("nf4")  # the codebook differs, not the bytes


def test_llm_int8_holds_a_byte_per_weight_and_an_fp32_scale_per_row() -> None:
    expected = MATRICES + 4 * 32 * ROWS_PER_BLOCK + (EMBED_AND_HEAD + NORMS) * 2
    assert _weights("llm-int8") == expected == 7_006_265_344
    assert _weights("llm-int8") > _weights("int8") - MATRICES // 64  # not GPTQ's fp16 scale per 128 weights


def test_tp_splits_the_quantized_blocks_and_their_scales() -> None:
    assert _weights("nf4-dq", tp=2) == -(-(MATRICES // 2) * NF4_BITS_X16384 // (8 * 16384)) + (EMBED_AND_HEAD // 2 + NORMS) * 2
    assert _weights("llm-int8", tp=2) == MATRICES // 2 + 4 * 32 * ROWS_PER_BLOCK // 2 + (EMBED_AND_HEAD // 2 + NORMS) * 2


def test_qlora_base_and_served_nf4_share_one_layout() -> None:
    """The same linear layers at the same 4.127 bits; QLoRA only keeps the rest in fp32 (PEFT's upcast)."""
    assert NF4_BITS_X16384 == BITS_X16384[WeightFormat.NF4_DQ]
    pins = {"precision": "bf16-mixed", "optimizer": "adamw", "recompute": "full", "zero": 0, "tp": 1, "dp": 1, "micro_batch": 1}
    qlora = evaluate_config("llama-2-7b", "a100-80g:1", mode="qlora", seq_len=2048, **pins).memory_bytes["weights"]
    adapters = 39_976_960
    assert qlora - adapters * 4 - (EMBED_AND_HEAD + NORMS) * 4 == _weights("nf4-dq") - (EMBED_AND_HEAD + NORMS) * 2


def _run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    code = main(["--mode", "infer", "--model", "llama-2-7b", "--gpus", "a100-80g:1", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_takes_the_formats_and_names_them_when_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, ["--weight-format", "nf4-dq", "--top", "1"])
    assert code == 0 and "nf4-dq" in out
    code, _, err = _run(capsys, ["--weight-format", "bnb4"])
    assert code == 2 and err.count("\n") == 1 and "nf4" in err


def test_bitsandbytes_formats_are_not_searched_unless_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, ["--top", "10", "--json"])
    assert code == 0
    formats = {row["weight_format"] for row in json.loads(out)["plans"]}
    assert formats and not formats & {"nf4", "nf4-dq", "fp4", "fp4-dq", "llm-int8"}
    code, out, _ = _run(capsys, ["--top", "20", "--json", "--weight-format", "any"])
    assert code == 0 and {"nf4-dq", "llm-int8"} <= {row["weight_format"] for row in json.loads(out)["plans"]}
