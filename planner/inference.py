"""Inference memory: weights by storage format, and the seeds' quick estimate."""

from __future__ import annotations

from planner.specs import WeightFormat

WEIGHT_FORMAT_BITS: dict[WeightFormat, int] = {
    WeightFormat.FP32: 32,
    WeightFormat.FP16: 16,
    WeightFormat.BF16: 16,
    WeightFormat.FP8: 8,
    WeightFormat.INT8: 8,
    WeightFormat.INT4: 4,
    WeightFormat.NF4: 4,
    WeightFormat.NF4_DQ: 4,
    WeightFormat.FP4: 4,
    WeightFormat.FP4_DQ: 4,
    WeightFormat.LLM_INT8: 8,
}


def inference_weights_bytes(params: int, fmt: WeightFormat) -> int:
    """params x bytes/param: fp32 4, fp16/bf16 2, fp8/int8 1, int4 0.5 (seeds 000 and 001:
    7B fp16 -> 14 GB, 13B -> 26 GB, 65B -> 130 GB, 7B int4 -> 3.5 GB). No
    quantization scales: the seeds' rule, not a GPTQ/AWQ layout."""
    return -(-params * WEIGHT_FORMAT_BITS[fmt] // 8)


def seed_inference_total_bytes(weights_bytes: int) -> int:
    """Seed 001's rule of thumb: total inference memory ~ 1.2 x weights
    (extra forward-pass overhead kept within 20%; ChatGLM-6B fp16 12 GB -> 14.4 GB)."""
    return -(-weights_bytes * 6 // 5)
