"""Knob values as parallel numpy arrays: one row per configuration.

The memory model evaluates a whole grid of configurations at once and a single
configuration as a grid of one row, through the same functions. Enum-valued
knobs are stored as their index in the fixed orders of `planner.specs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import numpy.typing as npt

from planner.specs import KV_FORMATS, OFFLOADS, OPTIMIZERS, PRECISIONS, RECOMPUTES, WEIGHT_FORMATS, Knobs

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class KnobArrays:
    gpu: IntArray  # index into the request's inventory
    precision: IntArray  # index into PRECISIONS
    optimizer: IntArray  # index into OPTIMIZERS
    recompute: IntArray  # index into RECOMPUTES
    zero_stage: IntArray
    tp: IntArray
    dp: IntArray
    micro_batch: IntArray
    pp: IntArray
    vpp: IntArray
    sp: IntArray  # 0 or 1
    cp: IntArray
    offload: IntArray  # index into OFFLOADS
    ep: IntArray  # expert-parallel degree, a divisor of dp
    dp_shard: IntArray  # HSDP: DP ranks that shard states within a replica (a divisor of dp); 0 = all of DP
    weight_format: IntArray  # index into WEIGHT_FORMATS (serving)
    kv_format: IntArray  # index into KV_FORMATS (serving)

    def __len__(self) -> int:
        return len(self.tp)

    @property
    def model_parallel(self) -> IntArray:
        """GPUs per data-parallel rank: TP x PP x CP."""
        return self.tp * self.pp * self.cp

    @property
    def shards(self) -> IntArray:
        """Ranks that ZeRO/FSDP/the distributed optimizer shard over: DP x CP, or
        under hybrid sharding (HSDP) the DP ranks of one replica x CP."""
        return np.where(self.dp_shard > 0, self.dp_shard, self.dp) * self.cp

    @property
    def dp_multiple(self) -> IntArray:
        """What DP must be a multiple of: EP (experts draw their ranks from DP) and the HSDP shard group."""
        return np.lcm(self.ep, np.maximum(self.dp_shard, 1))

    def take(self, index: npt.ArrayLike) -> KnobArrays:
        return KnobArrays(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def with_dp(self, dp: npt.ArrayLike) -> KnobArrays:
        return replace(self, dp=np.broadcast_to(np.asarray(dp, dtype=np.int64), self.tp.shape).copy())

    def knobs(self, i: int, gpu_ids: Sequence[str]) -> Knobs:
        return Knobs(
            gpu=gpu_ids[int(self.gpu[i])],
            precision=PRECISIONS[int(self.precision[i])],
            optimizer=OPTIMIZERS[int(self.optimizer[i])],
            recompute=RECOMPUTES[int(self.recompute[i])],
            zero_stage=int(self.zero_stage[i]),
            tp=int(self.tp[i]),
            dp=int(self.dp[i]),
            micro_batch=int(self.micro_batch[i]),
            pp=int(self.pp[i]),
            vpp=int(self.vpp[i]),
            sp=bool(self.sp[i]),
            cp=int(self.cp[i]),
            offload=OFFLOADS[int(self.offload[i])],
            ep=int(self.ep[i]),
            dp_shard=int(self.dp_shard[i]),
            weight_format=WEIGHT_FORMATS[int(self.weight_format[i])],
            kv_format=KV_FORMATS[int(self.kv_format[i])],
        )

    @classmethod
    def from_knobs(cls, knobs: Sequence[Knobs], gpu_ids: Sequence[str]) -> KnobArrays:
        def col(values: Sequence[int]) -> IntArray:
            return np.asarray(values, dtype=np.int64)

        return cls(
            gpu=col([list(gpu_ids).index(k.gpu) for k in knobs]),
            precision=col([PRECISIONS.index(k.precision) for k in knobs]),
            optimizer=col([OPTIMIZERS.index(k.optimizer) for k in knobs]),
            recompute=col([RECOMPUTES.index(k.recompute) for k in knobs]),
            zero_stage=col([k.zero_stage for k in knobs]),
            tp=col([k.tp for k in knobs]),
            dp=col([k.dp for k in knobs]),
            micro_batch=col([k.micro_batch for k in knobs]),
            pp=col([k.pp for k in knobs]),
            vpp=col([k.vpp for k in knobs]),
            sp=col([int(k.sp) for k in knobs]),
            cp=col([k.cp for k in knobs]),
            offload=col([OFFLOADS.index(k.offload) for k in knobs]),
            ep=col([k.ep for k in knobs]),
            dp_shard=col([k.dp_shard for k in knobs]),
            weight_format=col([WEIGHT_FORMATS.index(k.weight_format) for k in knobs]),
            kv_format=col([KV_FORMATS.index(k.kv_format) for k in knobs]),
        )


def ceil_div(a: npt.ArrayLike, b: npt.ArrayLike) -> IntArray:
    """Exact integer ceiling division, elementwise."""
    return -(-np.asarray(a, dtype=np.int64) // np.asarray(b, dtype=np.int64))
