"""One planning pass: space -> DP thresholds -> CP-SAT -> re-verified Plan."""

from __future__ import annotations

from planner.candidates import Candidates, departure_count, fewest_gpus, find_candidates, fit_threshold, run_pieces
from planner.explain import explain_infeasible
from planner.pareto import cost_time_front
from planner.plan import Plan, PlanRow, PlanStatus, assumptions, make_row
from planner.solver import SolveStatus, solve
from planner.space import build_space
from planner.specs import Request


def solve_request(request: Request) -> Plan:
    """Solve a request; every row is re-evaluated with the memory model and must fit."""
    space = build_space(request)
    fit, pieces = fit_threshold(space), run_pieces(space)
    candidates = find_candidates(space, fit, pieces)
    result = solve(candidates, request.top, request.time_limit_s, request.diverse)
    rows = []
    for rank, choice in enumerate(result.choices, start=1):
        k = candidates.knobs.take([choice.candidate]).with_dp([choice.dp])
        row = make_row(space, k, rank, proved_optimal=choice.status is SolveStatus.OPTIMAL)
        if not row.fits:
            raise AssertionError(f"internal error: solver returned a plan that does not fit ({row.knobs}); please report it")
        rows.append(row)
    reference = _reference_plan(candidates, rows, request.time_limit_s)
    closest: PlanRow | None = None
    explanation: str | None = None
    if rows:
        status = PlanStatus.OPTIMAL if result.status is SolveStatus.OPTIMAL else PlanStatus.FEASIBLE
        if result.timed_out:
            explanation = (
                f"--time-limit {request.time_limit_s:g} s reached: {len(rows)} of {request.top} plans ranked"
                + ("" if status is PlanStatus.OPTIMAL else ", the first not proved optimal")
                + "; raise the limit for more"
            )
    else:
        status = PlanStatus.INFEASIBLE
        why = explain_infeasible(space, fit, pieces if request.job is not None else None)
        explanation = why.message
        if why.closest_index is not None:
            k = space.grid.take([why.closest_index]).with_dp([why.closest_dp])
            closest = make_row(space, k, 0, proved_optimal=False)
    front = cost_time_front(space, fit, pieces) if pieces is not None and request.job is not None else ()
    return Plan(status, request, tuple(rows), reference, closest, explanation, assumptions(request), result.wall_s, front=front,
                fewest_gpus=fewest_gpus(space, fit))


def _reference_plan(candidates: Candidates, rows: list[PlanRow], time_left_s: float) -> PlanRow | None:
    """When the best plan departs from the reference numerics, the best plan that does not."""
    if not rows or not rows[0].departures or time_left_s <= 0:
        return None
    pure = candidates.subset(departure_count(candidates.space, candidates.knobs) == 0)
    found = solve(pure, 1, time_left_s).choices
    if not found:
        return None
    k = pure.knobs.take([found[0].candidate]).with_dp([found[0].dp])
    return make_row(candidates.space, k, 0, proved_optimal=found[0].status is SolveStatus.OPTIMAL)
