"""Brute force over the same space: every tuple at every allowed DP.

The oracle shares the memory model and the tie order with the solver but
none of its shortcuts (no DP threshold search, no CP-SAT), so tests and
benchmarks can hold the solver to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from planner.candidates import band_limit, capacity_bytes, evaluate, job_primary, row_groups, run_pieces, tie_rank
from planner.grid import IntArray, KnobArrays
from planner.job import JobPieces, within_limits
from planner.solver import price_millicents_for
from planner.space import Space
from planner.specs import Diversity, Objective


@dataclass(frozen=True)
class OracleRow:
    knobs_index: int  # row of space.grid
    dp: int
    primary: int  # GPU count, or cost in millicents per hour
    rank: int  # tie-break position among the tuples of the space, each at its best DP


def _pairs(space: Space) -> Iterator[tuple[IntArray, IntArray]]:
    """Every (grid row, DP) pair the rules allow, in chunks."""
    return space.pairs(space.dp_lo)


def space_size(space: Space) -> int:
    """How many complete configurations (tuple and DP) the rules allow."""
    return sum(len(r) for r, _ in _pairs(space))


def enumerate_feasible(space: Space, pieces: JobPieces | None = None) -> tuple[KnobArrays, IntArray]:
    """Every (tuple, DP) pair the rules allow, that fits, is covered by `pieces` (run or step
    time coefficients) and with a job meets its deadline and budget; returns the knob rows and
    their grid index."""
    job = space.request.job
    rows, dps = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for r, d in _pairs(space):
        k = space.grid.take(r).with_dp(d)
        fits = evaluate(space, k).total <= capacity_bytes(space, k)
        if pieces is not None:
            seconds, cents, covered = pieces.take(r).values(d)
            fits &= covered & (within_limits(job, seconds, cents, pieces.priced[r]) if job is not None else True)
        rows.append(r[fits])
        dps.append(d[fits])
    r = np.concatenate(rows)
    return space.grid.take(r).with_dp(np.concatenate(dps)), r


def best(space: Space, top: int = 1, diverse: Sequence[Diversity] | None = None) -> list[OracleRow]:
    """The `top` best answers at their best DP, like `solver.solve`: each tuple at the DP
    with its best primary value (then the smallest); then, `top` times, the first row in tie
    order within the band of the best row left (`candidates.band_limit`), its group
    (`candidates.row_groups`) removed after it."""
    pieces = run_pieces(space)
    k, index = enumerate_feasible(space, pieces)
    if not len(index):
        return []
    if pieces is not None:
        seconds, cents, _ = pieces.take(index).values(k.dp)
        primary = job_primary(space, k, seconds, cents)
    else:
        gpus = k.model_parallel * k.dp
        primary = gpus * price_millicents_for(space)[k.gpu] if space.request.objective is Objective.COST else gpus
    order = np.lexsort((k.dp, primary, index))  # per tuple: best primary, then the smallest DP
    first = order[np.r_[True, index[order][1:] != index[order][:-1]]]
    k, index, primary = k.take(first), index[first], primary[first]
    rank = tie_rank(space, k)
    groups = row_groups(space, k, diverse)
    alive = np.ones(len(index), dtype=bool)
    out: list[OracleRow] = []
    while len(out) < top and alive.any():
        pool = np.flatnonzero(alive & (primary <= band_limit(space, int(primary[alive].min()))))
        i = int(pool[np.argmin(rank[pool])])
        out.append(OracleRow(int(index[i]), int(k.dp[i]), int(primary[i]), int(rank[i])))
        alive &= groups != groups[i]
    return out
