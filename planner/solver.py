"""CP-SAT model: choose one small-knob tuple and a DP degree.

Literals `x[i]` pick a candidate tuple (exactly one). Everything that depends
on the tuple is a precomputed integer coefficient selected by the literals
(the memory threshold `fit_dp`, TP degree, micro-batch, GPU type, price, tie
rank), so the model stays linear:

    dp >= sum_i x[i] * fit_dp[i]           memory fits (memory never grows with DP)
    dp <= sum_i x[i] * dp_hi[i]            the inventory holds TP x DP GPUs
    (micro_batch, dp) in allowed pairs     global batch = micro_batch x DP x accumulation
    gpus = sum_t t * dp_t, dp_t <= M * [TP*PP*CP = t], sum_t dp_t = dp
    cost = sum_g price_g * gpus_g, likewise per GPU type
    minimize primary * (max rank + 1) + sum_i x[i] * rank[i]

The objective's second term breaks ties by a total order (reference
numerics, less recomputation, less sharding, larger micro-batch), so the
optimum is unique and the answer deterministic. Ranking by step time, ties
are a band (`candidates.band_limit`: within SPEED_TOLERANCE of the fastest)
and two solves: the fastest time, then the first tuple in tie order within
its band. Top-K re-solves with the previous answer's group forbidden
(`candidates.row_groups`: rows a user would not choose between, or with
`diverse` the same combination of those knobs).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from ortools.sat.python import cp_model

from planner.candidates import Candidates, band_limit, job_primary, row_groups
from planner.space import Space, allowed_pairs
from planner.specs import Diversity, Objective

MILLICENTS_PER_USD = 100_000


class SolveStatus(StrEnum):
    OPTIMAL = "optimal"  # proved optimal
    FEASIBLE = "feasible"  # found, not proved optimal within the time limit
    INFEASIBLE = "infeasible"  # proved: nothing fits
    UNKNOWN = "unknown"  # time limit hit before any solution or proof


@dataclass(frozen=True)
class Choice:
    candidate: int  # row of Candidates
    dp: int
    status: SolveStatus  # of the solve that produced it


@dataclass(frozen=True)
class SolveResult:
    choices: tuple[Choice, ...]
    status: SolveStatus  # of the first solve
    wall_s: float
    timed_out: bool  # the time limit stopped the ranking before `top` plans


def price_millicents_for(space: Space) -> np.ndarray:
    """On-demand price per GPU-hour of each inventory type, in integer millicents."""
    prices = [round(s.gpu.price.usd_per_hour * MILLICENTS_PER_USD) if s.gpu.price else 0 for s in space.request.inventory]
    return np.asarray(prices, dtype=np.int64)


class _Model:
    def __init__(self, cands: Candidates) -> None:
        req = cands.space.request
        k = cands.knobs
        n = len(cands)
        m = cp_model.CpModel()
        self.model = m
        self.x = [m.new_bool_var(f"x{i}") for i in range(n)]
        m.add_exactly_one(self.x)
        dense = np.argsort(np.argsort(cands.rank))  # tie order as 0..n-1 within this model
        self.tie = cp_model.LinearExpr.weighted_sum(self.x, dense.tolist())
        self.dp: cp_model.IntVar | None = None
        if cands.pieces is not None:
            self._job(cands)
            return
        max_dp = int(cands.dp_hi.max())
        values = cands.space.dp_values
        if isinstance(values, range):
            domain = cp_model.Domain(values.start, min(values.stop - 1, max_dp))
        else:
            domain = cp_model.Domain.from_values([d for d in values if d <= max_dp])
        self.dp = m.new_int_var_from_domain(domain, "dp")
        m.add(self.dp >= cp_model.LinearExpr.weighted_sum(self.x, cands.fit_dp.tolist()))
        m.add(self.dp <= cp_model.LinearExpr.weighted_sum(self.x, cands.dp_hi.tolist()))
        if req.workload.global_batch is not None:
            mb = m.new_int_var(int(k.micro_batch.min()), int(k.micro_batch.max()), "micro_batch")
            m.add(mb == cp_model.LinearExpr.weighted_sum(self.x, k.micro_batch.tolist()))
            m.add_allowed_assignments([mb, self.dp], allowed_pairs(cands.space, k.micro_batch.tolist()))
        mp = k.model_parallel
        gpus = m.new_int_var(1, int((mp * cands.dp_hi).max()), "gpus")
        m.add(gpus == self._split(self.dp, mp, max_dp, "mp"))
        for e, part in self._parts(self.dp, k.dp_multiple, max_dp, "multiple").items():
            if e > 1:  # EP draws its ranks from DP, HSDP replicates whole shard groups: DP is a multiple of both
                m.add(part == e * m.new_int_var(0, max_dp // e, f"dp_over_{e}"))
        primary: cp_model.LinearExprT = gpus
        if req.objective is Objective.COST and req.job is None:
            prices = price_millicents_for(cands.space)
            gpus_total = int((mp * cands.dp_hi).max())
            primary = self._split(gpus, k.gpu, gpus_total, "type", weights=prices)
        self._objective(cands, primary)

    def _objective(self, cands: Candidates, primary: cp_model.LinearExprT) -> None:
        self.primary = primary
        self.space = cands.space
        bound = self._primary_bound(cands)
        banded = cands.space.request.objective is Objective.STEP_TIME  # ties within a band: two solves
        self.lexicographic = banded or bound * len(cands) >= 2**62  # or the scaled sum would overflow
        self.model.minimize(primary if self.lexicographic else primary * len(cands) + self.tie)
        self._hint(cands)

    def _job(self, cands: Candidates) -> None:
        """With a run to plan, each tuple already sits at the DP that ranks it best within the deadline,
        budget, global batch and memory (`candidates._best_dp_for_job`, exact per tuple): choosing the
        tuple is the whole decision, its run's seconds, cents or GPUs the coefficients."""
        self._objective(cands, cp_model.LinearExpr.weighted_sum(self.x, job_values(cands).tolist()))

    @staticmethod
    def _primary_bound(cands: Candidates) -> int:
        k = cands.knobs
        if cands.pieces is not None:
            return int(job_values(cands).max()) + 1
        gpus = int((k.model_parallel * cands.dp_hi).max())
        return gpus * int(max(price_millicents_for(cands.space).max(), 1)) + 1


    def _hint(self, cands: Candidates) -> None:
        """Start from the tuple that is best at its own best DP, so a time limit still yields a plan."""
        self.hinted = int(own_optimum_order(cands)[0])
        for i, lit in enumerate(self.x):
            self.model.add_hint(lit, i == self.hinted)
        if self.dp is not None:
            self.model.add_hint(self.dp, int(cands.knobs.dp[self.hinted]))

    def _parts(self, var: cp_model.IntVar, key: np.ndarray, bound: int, name: str) -> dict[int, cp_model.IntVar]:
        """var split by the chosen tuple's key: var_v = var if the chosen tuple has key v, else 0.
        Linear: var_v <= bound * [key = v], sum var_v = var."""
        m = self.model
        parts = {}
        for v in np.unique(key):
            chosen = [self.x[i] for i in np.flatnonzero(key == v)]
            part = m.new_int_var(0, bound, f"{name}{v}")
            m.add(part <= bound * sum(chosen))
            parts[int(v)] = part
        m.add(sum(parts.values()) == var)
        return parts

    def _split(self, var: cp_model.IntVar, key: np.ndarray, bound: int, name: str, weights: np.ndarray | None = None) -> cp_model.LinearExpr:
        """sum_v w(v) * var_v: with w(v) = v this is key * var (GPUs = TP x PP x CP x DP);
        with prices per GPU type it is the cost rate."""
        parts = self._parts(var, key, bound, name)
        coeffs = [v if weights is None else int(weights[v]) for v in parts]
        return cp_model.LinearExpr.weighted_sum(list(parts.values()), coeffs)


def job_values(cands: Candidates) -> np.ndarray:
    """The run's objective (seconds or cents; GPUs otherwise) of each candidate at its DP."""
    assert cands.pieces is not None
    seconds, cents, _ = cands.pieces.values(cands.knobs.dp)
    return job_primary(cands.space, cands.knobs, seconds, cents)


def own_optimum_order(cands: Candidates) -> np.ndarray:
    """Candidates sorted by the objective each reaches at its own best DP, then tie rank."""
    k = cands.knobs
    if cands.pieces is not None:
        return np.lexsort((cands.rank, job_values(cands)))
    primary = k.model_parallel * k.dp
    if cands.space.request.objective is Objective.COST:
        primary = primary * price_millicents_for(cands.space)[k.gpu]
    return np.lexsort((cands.rank, primary))


SHORTLIST_MIN = 256


def shortlist(cands: Candidates, top: int, groups: np.ndarray) -> np.ndarray:
    """Rows of `cands` that can appear in the answer, for a smaller CP-SAT model.

    Exact: a tuple's objective at its best DP is known from the numpy pass and
    every constraint is per tuple. Without a band, the K answers are the first
    rows of K distinct groups in `own_optimum_order`. With a band, the j-th
    answer lies within the band of the fastest row still allowed, which is no
    slower than the first row of the K-th distinct group: every row within that
    row's band is kept. The first max(256, 16K) rows are kept besides."""
    order = own_optimum_order(cands)
    keep = order[: max(SHORTLIST_MIN, 16 * top)]
    _, first = np.unique(groups[order], return_index=True)
    first = np.sort(first)[:top]
    keep = np.union1d(keep, order[first])
    if cands.pieces is not None and len(first):
        values = job_values(cands)
        limit = band_limit(cands.space, int(values[order[first[-1]]]))
        keep = np.union1d(keep, np.flatnonzero(values <= limit))
    return np.sort(keep)


def solve(candidates: Candidates, top: int, time_limit_s: float, diverse: Sequence[Diversity] | None = None) -> SolveResult:
    """The `top` best answers, each a tuple at its best DP, best first, from distinct groups
    (`candidates.row_groups`; with `diverse`, the best per combination of those knobs).
    `time_limit_s` bounds the CP-SAT searches together (model building aside).
    Choices index rows of `candidates`."""
    start = time.perf_counter()
    if len(candidates) == 0:
        return SolveResult((), SolveStatus.INFEASIBLE, 0.0, False)
    groups = row_groups(candidates.space, candidates.knobs, diverse)
    rows = shortlist(candidates, top, groups)
    mask = np.zeros(len(candidates), dtype=bool)
    mask[rows] = True
    candidates = candidates.subset(mask)
    groups = groups[rows]
    built = _Model(candidates)
    deadline = time.perf_counter() + time_limit_s
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    choices: list[Choice] = []
    first = SolveStatus.UNKNOWN
    wanted = min(top, len(np.unique(groups)))
    out_of_time = False
    for _ in range(wanted):
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            out_of_time = True
            break
        solver.parameters.max_time_in_seconds = remaining
        status, solver = _solve(built, solver, deadline)
        if not choices:
            first = status
        if status in (SolveStatus.UNKNOWN, SolveStatus.FEASIBLE):
            out_of_time = True
        if status not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
            break
        chosen = next(i for i, lit in enumerate(built.x) if solver.boolean_value(lit))
        dp = int(candidates.knobs.dp[chosen]) if built.dp is None else int(solver.value(built.dp))
        choices.append(Choice(int(rows[chosen]), dp, status))
        for i in np.flatnonzero(groups == groups[chosen]):
            built.model.add(built.x[int(i)] == 0)
    if not choices and first is SolveStatus.UNKNOWN:
        # out of time before CP-SAT reported: the hint is feasible by construction, not proved optimal
        first = SolveStatus.FEASIBLE
        choices.append(Choice(int(rows[built.hinted]), int(candidates.knobs.dp[built.hinted]), SolveStatus.FEASIBLE))
    return SolveResult(tuple(choices), first, time.perf_counter() - start, out_of_time)


_STATUS = {cp_model.OPTIMAL: SolveStatus.OPTIMAL, cp_model.FEASIBLE: SolveStatus.FEASIBLE, cp_model.INFEASIBLE: SolveStatus.INFEASIBLE}


def _solve(built: _Model, solver: cp_model.CpSolver, deadline: float) -> tuple[SolveStatus, cp_model.CpSolver]:
    """One ranking step. Lexicographic models: the best primary value, then the first
    tuple in tie order among those within its band (a second solve on a copy)."""
    status = _STATUS.get(solver.solve(built.model), SolveStatus.UNKNOWN)
    if not built.lexicographic or status is not SolveStatus.OPTIMAL:
        return status, solver
    best = round(solver.objective_value)
    second = built.model.clone()
    second.add(built.primary <= band_limit(built.space, best))
    second.minimize(built.tie)
    tie_solver = cp_model.CpSolver()
    tie_solver.parameters.num_workers = 1
    tie_solver.parameters.random_seed = 0
    tie_solver.parameters.max_time_in_seconds = max(0.001, deadline - time.perf_counter())
    tie_status = _STATUS.get(tie_solver.solve(second), SolveStatus.UNKNOWN)
    if tie_status is SolveStatus.OPTIMAL:
        return SolveStatus.OPTIMAL, tie_solver
    return SolveStatus.FEASIBLE, solver
