"""The step a plan runs when the user gives no global batch, and the pipeline
bubble a plan may have.

Pretraining batches grow with the model: GPT-3 (Brown et al. 2020, Table 2.1)
used 0.5M tokens per step below 1B parameters, 1M at 1.3-2.7B and 2M at
6.7-13B; Llama 2 (Touvron et al. 2023, Sec. 2.2) used 4M tokens at every
size from 7B to 70B, as Llama 3 did at the start of its 8B-405B runs
(Dubey et al. 2024, Sec. 3.4.1). The default is that table, in whole
sequences, rounded to a nearby count that many data-parallel degrees divide
(960 rather than 1024, so DP 3, 5 and 6 run the same batch as DP 8).

A 1F1B pipeline idles (PP - 1) / VPP micro-batch times per step
(Narayanan et al. 2021, Sec. 2.2); with m micro-batches the bubble is
(PP - 1) / (VPP x m) of the step's compute. Megatron's users keep it small
with m >> PP; the planner asks for at most MAX_BUBBLE (m >= 4 (PP - 1) / VPP).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from planner.grid import IntArray, KnobArrays

MIB_TOKENS = 2**20
# (parameters below, tokens per step): GPT-3 Table 2.1 below 6B, Llama 2/3 from 6B on
PRETRAIN_TOKENS_PER_STEP: tuple[tuple[float, int], ...] = (
    (1e9, MIB_TOKENS // 2),
    (3e9, MIB_TOKENS),
    (6e9, 2 * MIB_TOKENS),
    (float("inf"), 4 * MIB_TOKENS),
)
PRETRAIN_BATCH_SOURCE = "GPT-3 Table 2.1 below 6B parameters, Llama 2/3's 4M tokens from 6B"
ROUNDING_SLACK = 0.1  # the rounded batch stays within 10% of the table's tokens
MAX_BUBBLE = Fraction(1, 4)  # pipeline bubble at most 25% of the step's compute


def pretrain_tokens_per_step(params: int) -> int:
    """Tokens per optimizer step that published pretraining runs of this size used."""
    return next(tokens for below, tokens in PRETRAIN_TOKENS_PER_STEP if params < below)


def _divisors(n: int) -> int:
    return sum(1 for d in range(1, n + 1) if n % d == 0)


def divisible_near(target: float) -> int:
    """A count within ROUNDING_SLACK of `target` of the form 2^a x {1, 3, 5, 15} with the most
    divisors (then the nearest, then the larger): 1024 -> 960, 2048 -> 1920, 512 -> 480."""
    if target < 1.5:
        return 1
    lo, hi = target * (1 - ROUNDING_SLACK), target * (1 + ROUNDING_SLACK)
    found = [f * 2**a for f in (1, 3, 5, 15) for a in range(64) if lo <= f * 2**a <= hi]
    if not found:
        return max(1, round(target))
    return max(found, key=lambda n: (_divisors(n), -abs(n - target), n))


def default_pretrain_batch(params: int, seq_len: int) -> int:
    """Sequences per step: the size's tokens per step over the sequence length, made divisible."""
    return divisible_near(pretrain_tokens_per_step(params) / seq_len)


def bubble_dp_cap(k: KnobArrays, global_batch: int) -> IntArray:
    """Largest DP at which a pipeline row keeps its bubble within MAX_BUBBLE:
    m = G / (mb x DP) >= (PP - 1) / (VPP x MAX_BUBBLE). Rows without a pipeline: no cap."""
    need = (k.pp - 1) * MAX_BUBBLE.denominator  # (PP - 1) / MAX_BUBBLE x VPP x mb x DP <= G x VPP
    cap = np.where(k.pp > 1, (global_batch * k.vpp * MAX_BUBBLE.numerator) // np.maximum(need * k.micro_batch, 1), np.iinfo(np.int64).max)
    return cap.astype(np.int64)


def bubble_fraction(pp: int, vpp: int, microbatches: float) -> float:
    """(PP - 1) / (VPP x m): the 1F1B bubble as a share of the step's compute."""
    return (pp - 1) / (vpp * microbatches) if microbatches > 0 else 0.0
