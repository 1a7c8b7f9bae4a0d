"""The reference numerics and what departing from them costs, in words.

Precision and optimizer are not free knobs: pure 16-bit weights, 8-bit Adam,
Adafactor, Lion and SGD save memory but change convergence or stability, and
CPU offload can slow a step several times over. Every plan row names its
departures so nobody mistakes a memory saving for a free one.
"""

from __future__ import annotations

from planner.specs import Gpu, KvFormat, Offload, Optimizer, Precision, WeightFormat

REFERENCE_OPTIMIZER = Optimizer.ADAMW

_PRECISION_COST = {
    Precision.FP32: "fp32 training: no memory saving from 16-bit, 2-16x slower matmuls",
    Precision.FP16: "pure fp16 weights and optimizer states: no fp32 master copy, prone to underflow/divergence",
    Precision.BF16: "pure bf16 weights and optimizer states: no fp32 master copy, small updates can be lost",
    Precision.FP16_MIXED: "fp16 mixed precision: needs loss scaling",
    Precision.BF16_MIXED: "bf16 mixed precision",
    Precision.FP8_MIXED: "fp8 mixed precision (Transformer Engine): needs scaling recipes, validate convergence",
}
_OPTIMIZER_COST = {
    Optimizer.ADAMW_8BIT: "8-bit quantized optimizer states (bitsandbytes)",
    Optimizer.SGD_MOMENTUM: "SGD with momentum: usually converges worse on transformers",
    Optimizer.SGD: "plain SGD: usually converges worse on transformers",
    Optimizer.ADAFACTOR: "Adafactor: factored second moments, no momentum",
    Optimizer.LION: "Lion: sign updates, needs a smaller learning rate",
    Optimizer.ADAMW: "AdamW",
}
_OFFLOAD_COST = {
    Offload.OPTIMIZER: "the optimizer step runs on the CPU over PCIe: often several times slower per step",
    Offload.PARAMS: "parameters stream from CPU memory every step: often several times slower per step",
    Offload.PAGED: "optimizer states page over PCIe when the GPU runs short: slower steps only when they do",
}


_FORMAT_COST = {
    WeightFormat.FP32: "fp32 weights: twice the memory and bandwidth of 16-bit, no accuracy gain",
    WeightFormat.FP16: "fp16 weights",
    WeightFormat.BF16: "bf16 weights",
    WeightFormat.FP8: "fp8 weights and matmuls: small accuracy loss, check your evaluations",
    WeightFormat.INT8: "8-bit integer weights (GPTQ/AWQ style): small accuracy loss",
    WeightFormat.INT4: "4-bit integer weights (GPTQ/AWQ style): measurable accuracy loss, check your evaluations",
    WeightFormat.NF4: "bitsandbytes 4-bit NormalFloat weights: measurable accuracy loss, slower dequantizing kernels",
    WeightFormat.NF4_DQ: "bitsandbytes 4-bit NormalFloat weights, double-quantized scales: measurable accuracy loss, slower kernels",
    WeightFormat.FP4: "bitsandbytes 4-bit float weights: more accuracy loss than nf4, slower dequantizing kernels",
    WeightFormat.FP4_DQ: "bitsandbytes 4-bit float weights, double-quantized scales: more accuracy loss than nf4, slower kernels",
    WeightFormat.LLM_INT8: "bitsandbytes LLM.int8() weights: small accuracy loss, outlier decomposition slows each matmul",
}


def reference_format(gpu: Gpu) -> WeightFormat:
    """The serving reference: bf16 weights and cache, fp16 where the GPU lacks bf16."""
    return WeightFormat.BF16 if gpu.supports_bf16 else WeightFormat.FP16


def reference_kv_format(gpu: Gpu) -> KvFormat:
    return KvFormat.BF16 if gpu.supports_bf16 else KvFormat.FP16


def serving_departures(gpu: Gpu, weights: WeightFormat, kv: KvFormat) -> tuple[str, ...]:
    """Where a serving plan differs from 16-bit weights and a 16-bit KV cache."""
    out = []
    if weights is not reference_format(gpu):
        out.append(f"weights {weights} instead of {reference_format(gpu)}: {_FORMAT_COST[weights]}")
    if kv is not reference_kv_format(gpu):
        out.append(f"KV cache {kv} instead of {reference_kv_format(gpu)}: fp8 cache, small accuracy loss at long context")
    return tuple(out)


def reference_precision(gpu: Gpu) -> Precision:
    """The numerics a plan is compared against: bf16-mixed, or fp16-mixed where the GPU lacks bf16."""
    return Precision.BF16_MIXED if gpu.supports_bf16 else Precision.FP16_MIXED


def departures(gpu: Gpu, precision: Precision, optimizer: Optimizer, offload: Offload = Offload.NONE) -> tuple[str, ...]:
    """Where a plan differs from bf16-mixed (or fp16-mixed) + AdamW on the GPU with no offload."""
    out = []
    ref = reference_precision(gpu)
    if precision is not ref:
        out.append(f"precision {precision} instead of {ref}: {_PRECISION_COST[precision]}")
    if optimizer is not REFERENCE_OPTIMIZER:
        out.append(f"optimizer {optimizer} instead of {REFERENCE_OPTIMIZER}: {_OPTIMIZER_COST[optimizer]}")
    if offload is not Offload.NONE:
        out.append(f"offload {offload}: {_OFFLOAD_COST[offload]}")
    return tuple(out)
