"""The performance model (FLOPs, step time), its calibration against published runs,
and the run-level objectives built on it: time, cost, deadline, budget, procurement."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import EMPTY_CATALOG, gpu, model

from planner import flops, plan
from planner.catalog import load_catalog
from planner.cli import main
from planner.errors import PlannerInputError
from planner.grid import KnobArrays
from planner.job import job_pieces, steps
from planner.request import build_request
from planner.specs import GpuStock, Knobs, Mode, Optimizer, Precision, Recompute
from planner.steptime import step_terms
from planner.units import parse_count, parse_duration, parse_usd

BENCH = Path(__file__).resolve().parent.parent / "bench"
CATALOG = load_catalog()


# --- FLOPs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "layers", "seq", "vocab"), [(2304, 24, 2048, 51200), (12288, 96, 2048, 51200), (20480, 105, 2048, 51200)])
def test_hardware_flops_with_full_recompute_are_narayanan_eq3(h: int, layers: int, seq: int, vocab: int) -> None:
    """Narayanan et al. 2021 Eq. 3: F = 96 B s l h^2 (1 + s/6h + V/16lh) per iteration, full recomputation."""
    m = model(hidden_size=h, num_layers=layers, num_heads=h // 128, num_kv_heads=h // 128, attention_width=h, ffn_size=4 * h, vocab_size=vocab)
    per_token = flops.hardware_flops_per_token(m, seq, Recompute.FULL)
    eq3 = 96 * layers * h**2 * (1 + seq / (6 * h) + vocab / (16 * layers * h))
    assert per_token == pytest.approx(eq3, rel=1e-12)


def test_model_flops_match_the_6n_plus_attention_convention() -> None:
    """PaLM / torchtitan: 6 x (parameters except the embedding) + 12 x layers x width x seq per token."""
    m = CATALOG.model("llama2-7b")
    non_embedding = 6_738_415_616 - 32000 * 4096
    expected = 6 * non_embedding + 12 * 32 * 4096 * 4096
    assert flops.model_flops_per_token(m, 4096) == pytest.approx(expected, rel=2e-4)  # norms are not matmuls


def test_frozen_base_backward_costs_one_forward_not_two() -> None:
    m = CATALOG.model("llama2-7b")
    full, lora = flops.model_flops_per_token(m, 4096), flops.model_flops_per_token(m, 4096, Mode.LORA)
    linear = 2 * flops.linear_params_per_token(m)
    assert full - lora == linear


def test_moe_counts_the_experts_a_token_visits() -> None:
    mixtral = CATALOG.model("mixtral-8x7b")
    # 2 of 8 experts: about 12.9B active of 46.7B parameters (Mistral AI's Mixtral announcement)
    assert flops.linear_params_per_token(mixtral) == pytest.approx(12.9e9, rel=0.02)


# --- step time ---------------------------------------------------------------------------------------


def _knobs(**overrides: object) -> KnobArrays:
    base = {"gpu": "gpu", "precision": Precision.BF16_MIXED, "optimizer": Optimizer.ADAMW, "recompute": Recompute.FULL,
            "zero_stage": 1, "tp": 2, "dp": 4, "micro_batch": 2}
    return KnobArrays.from_knobs([Knobs(**{**base, **overrides})], ["gpu"])  # type: ignore[arg-type]


def _request(global_batch: int | None = 256, **options: object):
    stocks = (GpuStock(gpu(usable_memory_bytes=80 * 2**30, network_gbps=25.0, matmul_efficiency=0.6), 4096),)
    return build_request(CATALOG.model("llama2-13b"), stocks, catalog=EMPTY_CATALOG, global_batch=global_batch, **options)


@pytest.mark.parametrize("zero", [0, 1, 3])
@pytest.mark.parametrize("tp", [1, 2, 8])
def test_every_dp_falls_in_exactly_one_piece_and_pieces_join_up(zero: int, tp: int) -> None:
    req = _request()
    dps = np.arange(1, 600)
    k = _knobs(zero_stage=zero, tp=tp).take(np.zeros(len(dps), dtype=np.int64))
    terms = step_terms(req.model, req.workload, k, [req.inventory[0].gpu])
    inside = (terms.d_lo <= dps[:, None]) & (dps[:, None] <= terms.d_hi)
    assert (inside.sum(axis=1) == 1).all()
    # the model's step time (an output of planner.steptime, not a clock): its pieces agree where they meet
    modelled = terms.seconds(dps)
    assert np.all(np.abs(np.diff(modelled)) <= np.maximum(modelled[:-1], modelled[1:]) * 0.5)


def test_more_micro_batches_per_step_shrink_the_pipeline_bubble() -> None:
    req = _request()
    k = _knobs(pp=4, tp=1)
    terms = step_terms(req.model, req.workload, k, [req.inventory[0].gpu])
    parts_small_dp, parts_big_dp = terms.breakdown(np.array([2])), terms.breakdown(np.array([32]))
    share = lambda p: p["pipeline bubble"][0] / sum(v[0] for v in p.values())
    assert share(parts_small_dp) < share(parts_big_dp)


def test_offload_and_recompute_cost_time() -> None:
    req = _request()
    gpus = [req.inventory[0].gpu]
    base = step_terms(req.model, req.workload, _knobs(recompute=Recompute.NONE), gpus).seconds(np.array([4]))[0]
    full = step_terms(req.model, req.workload, _knobs(recompute=Recompute.FULL), gpus).seconds(np.array([4]))[0]
    from planner.specs import Offload

    off = step_terms(req.model, req.workload, _knobs(recompute=Recompute.NONE, offload=Offload.OPTIMIZER), gpus).seconds(np.array([4]))[0]
    assert base < full < 1.4 * base  # one more forward: about a third more compute
    assert off > base


# --- calibration --------------------------------------------------------------------------------------


def _calibration():
    sys.path.insert(0, str(BENCH))
    import throughput_calibration

    return throughput_calibration


def test_catalog_efficiencies_are_the_calibration_fit() -> None:
    """catalogs/gpus.toml carries what bench/throughput_calibration.py fits today."""
    cal = _calibration()
    runs = []
    for raw in __import__("tomllib").loads(cal.RUNS.read_text())["run"]:
        try:
            runs.append(cal.parse(raw))
        except cal.Skip:
            continue
    fitted = cal.fit_all(runs)
    for gpu_id, family in cal.FAMILIES.items() | {("b200", "b200")}:
        g = CATALOG.gpu(gpu_id)
        eff, eff8, _, _ = fitted[family]
        assert g.matmul_efficiency == pytest.approx(eff, abs=6e-4), gpu_id
        assert g.fp8_matmul_efficiency == pytest.approx(eff8, abs=6e-4), gpu_id
    within = [r for r in runs if r.fit and abs(cal.predicted_tokens_per_s(r, *cal._efficiencies(fitted, r.gpu)) / r.published_tokens_per_s_per_gpu - 1) <= 0.15]
    assert len(within) >= 8  # the bar: at least 8 published runs within 15% after calibration


def test_recorded_calibration_table_is_current() -> None:
    cal = _calibration()
    text = (BENCH / "results" / "throughput_calibration.csv").read_text()
    rows = [line for line in text.splitlines()[2:] if line]
    assert len(rows) >= 50
    assert "a100-sxm matmul 0.693" in text.splitlines()[0]
    assert cal.WITHIN_PCT == 15.0


# --- the run: integers shared by solver, oracle and rows --------------------------------------------


def test_run_seconds_are_steps_times_step_time() -> None:
    req = _request(tokens="50B")
    k = _knobs()
    pieces = job_pieces(req, k)
    terms = step_terms(req.model, req.workload, k, [s.gpu for s in req.inventory])
    n = steps(req.job, req.workload.global_batch, req.workload.seq_len)
    for d in (1, 2, 4, 8, 16, 64, 128):  # modelled durations (integers of planner.job), not clocks
        run, cents, covered = pieces.values(np.array([d]))
        per_step = terms.seconds(np.array([d]))[0]
        assert covered[0]
        assert abs(run[0] - n * per_step) <= 2  # integer rounding of the coefficients
        gpus = 2 * d
        expected_cents = gpus * n * per_step * 2.0 * 100 / 3600  # helper GPU costs $2/h
        assert cents[0] == pytest.approx(expected_cents, rel=1e-6, abs=2 * gpus)


def test_a_run_defaults_to_4m_token_steps_and_chinchilla_tokens() -> None:
    """Llama 2's 4M tokens per step, as 960 sequences of 4096 (DP 3, 5, 6 divide it; 1024 would not)."""
    req = build_request("70b", "h100-80g:64", objective="time")
    assert req.workload.global_batch == 960 and abs(960 * 4096 / (4 * 2**20) - 1) < 0.1
    assert req.job is not None and req.job.tokens == 20 * 68_976_648_192
    assert "Hoffmann" in req.job.tokens_source


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "lora", "objective": "time"}, "needs --tokens"),
        ({"mode": "infer", "tokens": "1B"}, "apply to training"),
        ({"tokens": "2X"}, "unknown suffix"),
        ({"tokens": "1B", "deadline": "3 fortnights"}, "unknown unit"),
        ({"tokens": "1B", "budget": "-5"}, "--budget expects"),
    ],
)
def test_run_options_fail_with_one_line(options: dict, message: str) -> None:
    with pytest.raises(PlannerInputError, match=message):
        build_request("7b", "h100-80g:8", **options)


def test_units() -> None:
    assert parse_count("--tokens", "2T") == 2 * 10**12
    assert parse_count("--tokens", "300B") == 3 * 10**11
    assert parse_count("--tokens", "1e9") == 10**9
    assert parse_duration("--deadline", "30d") == 30 * 86400
    assert parse_duration("--deadline", "36") == 36 * 3600
    assert parse_usd("--budget", "$1.5M") == 1.5e6


# --- acceptance: different winners for cost and time, procurement ---------------------------------------


def test_cost_and_time_pick_different_winners_on_a_mixed_inventory() -> None:
    gpus = "a100-80g:512,h100-80g:32"
    cheapest = plan("70b", gpus, objective="cost", tokens="2T", top=2, explain=True)
    fastest = plan("70b", gpus, objective="time", tokens="2T", top=2, explain=True)
    assert cheapest.best is not None and fastest.best is not None
    assert cheapest.best.knobs.gpu == "h100-80g" and fastest.best.knobs.gpu == "a100-80g"
    c, t = cheapest.best.throughput, fastest.best.throughput
    assert c.run_usd < t.run_usd and t.run_s < c.run_s  # each wins its own objective
    assert any("step takes" in r for r in fastest.reasons)
    assert any("costs $" in r or "same cost" in r for r in cheapest.reasons)
    assert any("trains in" in r or "same time" in r for r in fastest.reasons)


def test_deadline_that_cannot_be_met_names_the_fastest_run_and_verified_fixes(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--model", "70b", "--gpus", "h100-80g:64", "--tokens", "2T", "--deadline", "30d", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["status"] == "infeasible"
    assert "nothing meets the deadline" in doc["explanation"] and "over the 30.0 d deadline" in doc["explanation"]
    assert doc["fixes"], "a larger fleet should meet the deadline"
    for fix in doc["fixes"]:
        allowed = 30 * 86400 if "--deadline" not in fix["flags"] else float(fix["flags"].split("--deadline ")[1].rstrip("d")) * 86400
        assert fix["plan"]["throughput"]["run_s"] <= allowed
    assert any("--gpus" in fix["flags"] for fix in doc["fixes"]) and any("--deadline" in fix["flags"] for fix in doc["fixes"])


def test_budget_is_respected_by_every_plan() -> None:
    result = plan("13b", "a100-80g:256,h100-80g:256", objective="time", tokens="300B", budget="150k", top=5)
    assert result.fits
    for row in result.rows:
        assert row.throughput.run_usd <= 150_000


def test_procurement_picks_types_and_counts_from_the_catalog_with_prices(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--model", "70b", "--tokens", "2T", "--deadline", "30d", "--buy", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["objective"] == "cost"
    types = [p["gpu"] for p in doc["plans"]]
    assert len(types) == len(set(types)) >= 3  # the best fleet of each GPU type
    costs = [p["throughput"]["run_usd"] for p in doc["plans"]]
    assert costs == sorted(costs)
    for p in doc["plans"]:
        assert p["throughput"]["run_s"] <= 30 * 86400 and p["price_source"]


def test_procurement_caps_and_allowed_types() -> None:
    result = plan("13b", "h100-80g:<=16,a100-80g", buy=True, tokens="100B", top=3)
    assert {r.knobs.gpu for r in result.rows} <= {"h100-80g", "a100-80g"}
    assert all(r.knobs.gpus <= 16 for r in result.rows if r.knobs.gpu == "h100-80g")
    with pytest.raises(PlannerInputError, match="TYPE:<=N"):
        plan("13b", "h100-80g:~16", buy=True, tokens="100B")
    with pytest.raises(PlannerInputError, match="appears twice"):
        plan("13b", "h100:<=8,h100-80g", buy=True, tokens="100B")


def test_training_rows_report_speed_without_a_run() -> None:
    result = plan("13b", "a100-40g:8", top=1)
    speed = result.best.throughput
    assert speed.run_s is None and 0.2 < speed.mfu < 0.7 and speed.tokens_per_s > 0
    assert math.isfinite(speed.step_s)


# --- the cost/time front and the picture ---------------------------------------------------------------


def test_front_is_non_dominated_and_ends_at_the_fastest_and_cheapest_plans() -> None:
    gpus = "a100-80g:512,h100-80g:256"
    fastest = plan("70b", gpus, objective="time", tokens="2T", top=1)
    cheapest = plan("70b", gpus, objective="cost", tokens="2T", top=1)
    front = fastest.front
    assert len(front) >= 2 and front == cheapest.front
    times = [p.run_s for p in front]
    costs = [p.run_usd for p in front]
    assert times == sorted(times) and costs == sorted(costs, reverse=True)
    assert len(set(times)) == len(times)
    from planner.candidates import significant

    def sig(x: float) -> int:
        return int(significant(np.array([round(x)]))[0])

    assert sig(front[0].run_s) == sig(fastest.best.throughput.run_s)
    assert sig(front[-1].run_usd * 100) == sig(cheapest.best.throughput.run_usd * 100)


def test_front_respects_the_deadline() -> None:
    result = plan("13b", "h100-80g:512", objective="cost", tokens="300B", deadline="10d", top=1)
    assert result.front and all(p.run_s <= 10 * 86400 for p in result.front)


def test_plot_draws_memory_and_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plan.png"
    code = main(["--model", "70b", "--gpus", "a100-80g:512,h100-80g:256", "--tokens", "2T", "--minimize", "time", "--plot", str(out)])
    assert code == 0 and out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"


def test_plot_without_matplotlib_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = main(["--model", "7b", "--gpus", "a100-80g:8", "--plot", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'planner[plot]'" in err and len(err.strip().splitlines()) == 1


def test_global_batch_in_tokens() -> None:
    assert build_request("7b", "h100-80g:64", global_batch="2M-tokens").workload.global_batch == 2_000_000 // 4096
    assert build_request("7b", "h100-80g:64", global_batch="512").workload.global_batch == 512
    with pytest.raises(PlannerInputError, match="tokens per step"):
        build_request("7b", "h100-80g:64", global_batch="lots")
