"""The `plan` command end to end: exit codes, one-line errors, JSON schema, frozen flags."""

from __future__ import annotations

import json
import os
from importlib import resources

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.cli import app, main

MAIN_JOB = ["--model", "13b", "--gpus", "a100-40g:8"]


def run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def schema() -> dict:
    return json.loads(resources.files("planner").joinpath("plan.schema.json").read_text())


def test_main_job_prints_ranked_plans(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, MAIN_JOB)
    assert code == 0, err
    assert "status: optimal" in out
    assert "a100-40g" in out and "Llama-2-13B" in out
    rows = [line for line in out.splitlines() if line.strip()[:2].strip().isdigit() and "x a100-40g" in line]
    assert len(rows) == 5


def test_main_job_json_validates_and_adds_up(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, [*MAIN_JOB, "--json"])
    assert code == 0
    doc = json.loads(out)
    jsonschema.validate(doc, schema())
    assert doc["status"] == "optimal" and len(doc["plans"]) == 5
    for row in doc["plans"]:
        assert sum(row["memory_bytes"].values()) == row["total_bytes"] <= row["usable_bytes"]
        assert row["gpu_count"] == row["tp"] * row["dp"] <= 8
    counts = [r["gpu_count"] for r in doc["plans"]]
    assert counts == sorted(counts)


PINNED = [
    "--precision", "bf16-mixed", "--optimizer", "adamw", "--recompute", "selective", "--zero", "3",
    "--tp", "2", "--dp", "4", "--micro-batch", "2",
]


@pytest.mark.parametrize(("gpus", "precision"), [("a100-40g:8", "bf16-mixed"), ("a100-80g:8", "bf16-mixed"), ("t4:8", "fp16-mixed")])
def test_every_knob_pinned_returns_exactly_that_configuration(capsys: pytest.CaptureFixture[str], gpus: str, precision: str) -> None:
    """Any single configuration can be evaluated, fitting (exit 0) or not (exit 1, in `closest`)."""
    from planner import evaluate_config

    pins = {"precision": precision, "optimizer": "adamw", "recompute": "full", "zero": 3, "tp": 2, "dp": 4, "micro_batch": 2}
    args = [f"--{name.replace('_', '-')}={value}" for name, value in pins.items()]
    code, out, _ = run(capsys, ["--model", "13b", "--gpus", gpus, *args, "--json"])
    doc = json.loads(out)
    jsonschema.validate(doc, schema())
    row = doc["plans"][0] if doc["plans"] else doc["closest"]
    assert code == (0 if row["fits"] else 1)
    assert [row[k] for k in ("precision", "optimizer", "recompute", "zero_stage", "tp", "dp", "micro_batch")] == list(pins.values())
    expected = evaluate_config("13b", gpus, **pins)
    assert row["memory_bytes"] == expected.memory_bytes and row["total_bytes"] == expected.total_bytes
    assert row["fits"] == expected.fits


def test_nothing_fits_exits_1_with_the_binding_constraint(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ["--model", "405b", "--gpus", "a100-40g:8"])
    assert code == 1
    assert "status: infeasible" in out and "memory binds" in out and "GiB usable" in out
    assert "closest configuration (does not fit)" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "13b", "--gpus", "a100-40"], "expected TYPE:COUNT"),
        (["--model", "13b", "--gpus", "a100-40:8"], "unknown GPU 'a100-40'; did you mean"),
        (["--model", "13b", "--gpus", "a100:8"], "did you mean"),
        (["--model", "13b", "--gpus", "a100-40g:0"], "bad GPU count"),
        (["--model", "13b", "--gpus", "a100-40g:8,a100-40g:2"], "appears twice"),
        (["--model", "13bb", "--gpus", "a100-40g:8"], "unknown model '13bb'"),
        (["--model", "13b", "--gpus", "a100-40g:8", "--tp", "3"], "--tp 3 is impossible"),
        (["--model", "13b", "--gpus", "a100-40g:8", "--tp", "16"], "--tp 16 is impossible"),
        (["--model", "13b", "--gpus", "a100-40g:8", "--dp", "16"], "--dp 16 needs 16 GPUs"),
        (["--model", "13b", "--gpus", "a100-40g:8", "--precision", "fp8-mixed"], "not supported by a100-40g"),
        (["--model", "13b", "--gpus", "a100-40g:8", "--precision", "bf17"], "unknown --precision value 'bf17'"),
        (["--model", "13b", "--gpus", "a100-40g:8", "--zero", "4"], "--zero 4 is not one of"),
        (["--model", "13b", "--gpus", "a100-40g:8", "--micro-batch", "3", "--global-batch", "64"], "does not divide"),
        (["--model", "13b", "--gpus", "a100-40g:8", "--minimize", "speed"], "unknown --minimize value"),
        (["--model", "13b", "--gpus", "v100-32g:8", "--minimize", "cost"], "no price for v100-32g"),
        (["--model", "gpt2", "--gpus", "a100-40g:8", "--seq-len", "4096"], "learned position table"),
        (["--model", "13b"], "missing --gpus"),
        (["--modle", "13b", "--gpus", "a100-40g:8"], "No such option"),
        (["--model", "13b", "--gpus", "a100-40g:8", "--top", "zero"], "Invalid value"),
        (["--model", "13b", "--gpus", "a100-40g:8", "--format", "xml"], "unknown --format"),
        (["--model", "13b", "--gpus", "a100-40g:8", "--catalog", "/nonexistent.toml"], "not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    code, out, err = run(capsys, args)
    assert code == 2, (out, err)
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_user_catalog_overrides_a_price_and_adds_a_gpu(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    extra = tmp_path / "mine.toml"
    extra.write_text(
        '[[gpu]]\nid = "a100-40g"\n[gpu.price]\nusd_per_hour = 0.99\nprovider = "my cluster"\noffer = "internal"\n'
        'date = 2026-11-01\nsource = "internal chargeback rate"\n'
    )
    code, out, err = run(capsys, [*MAIN_JOB, "--catalog", str(extra), "--json", "--minimize", "cost"])
    assert code == 0, err
    row = json.loads(out)["plans"][0]
    assert row["usd_per_hour"] == pytest.approx(0.99 * row["gpu_count"])
    assert "my cluster" in row["price_source"]


def test_bad_user_catalog_names_file_entry_and_field(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    extra = tmp_path / "bad.toml"
    extra.write_text('[[gpu]]\nid = "a100-40g"\nusable_memory_mib = -5\n')
    code, _, err = run(capsys, [*MAIN_JOB, "--catalog", str(extra)])
    assert code == 2
    assert "bad.toml: gpu 'a100-40g': field 'usable_memory_mib' must be a positive integer" in err


def test_list_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ["gpus"])
    assert code == 0 and "a100-40g" in out and "h100-80g" in out
    code, out, _ = run(capsys, ["models"])
    assert code == 0 and "llama2-13b" in out


def test_csv_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, [*MAIN_JOB, "--format", "csv"])
    assert code == 0
    header = out.splitlines()[0].split(",")
    assert "total_bytes" in header and "weights_bytes" in header and len(out.splitlines()) == 6


FROZEN_OPTIONS = {
    "--model", "--gpus", "--mode", "--context", "--batch", "--maximize", "--lora-rank", "--lora-targets",
    "--weight-format", "--kv-dtype", "--seq-len", "--global-batch", "--precision", "--optimizer", "--recompute", "--tp", "--dp",
    "--zero", "--micro-batch", "--minimize", "--tokens", "--budget", "--deadline", "--buy", "--plot", "--output", "--params", "--top", "--diverse", "--explain", "--breakdown", "--wide", "--json", "--format", "--accounting", "--attention", "--loss",
    "--framework", "--compile", "--margin", "--pp", "--vpp", "--sp", "--cp", "--offload", "--ep", "--dp-shard", "--overhead-gib", "--fragmentation-pct", "--time-limit", "--catalog", "--help",
}


def test_no_new_cli_options() -> None:
    """Adding a flag is a decision: update this list (and the README) on purpose."""
    import typer.main

    command = typer.main.get_command(app)
    ctx = command.make_context("plan", [], resilient_parsing=True)
    names = {opt for p in command.get_params(ctx) for opt in p.opts if opt.startswith("--")}
    assert names == FROZEN_OPTIONS
    assert set(command.commands) == {"gpus", "models", "run"}


_FUZZ_FLAGS = ["--model", "--gpus", "--tokens", "--deadline", "--budget", "--global-batch", "--tp", "--zero", "--precision",
               "--mode", "--context", "--batch", "--lora-targets", "--offload", "--minimize", "--format", "--diverse", "--dp-shard"]


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    flags=st.lists(
        st.tuples(st.sampled_from(_FUZZ_FLAGS), st.text(alphabet="abcdefghkmstx0123456789:,.-<=/ ", min_size=0, max_size=12)),
        min_size=1, max_size=4,
    )
)
def test_malformed_input_never_reaches_the_user_as_a_traceback(flags, capsys) -> None:
    """Whatever is typed: exit 0, 1 or 2, and on 2 exactly one line on stderr, never 'internal error'."""
    args = ["--model", "7b", "--gpus", "a100-80g:8"]
    for flag, value in flags:
        args += [flag, value]
    capsys.readouterr()  # the fixture is shared across examples: start clean
    code = main(args)
    _, err = capsys.readouterr()
    assert code in (0, 1, 2), err
    assert "internal error" not in err and "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1


def test_markdown_format_is_a_table_with_notes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, [*MAIN_JOB, "--format", "markdown"])
    assert code == 0
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].startswith("| # | GPUs |") and set(table[1].replace("|", "").split()) <= {"---", "--:"}
    assert len(table) == 2 + 5  # header, rule, five plans (the first keeps the reference numerics: no ref row)
    after = out.splitlines()[out.splitlines().index(table[-1]) + 1]
    assert after == ""  # a paragraph never runs into the table
    assert "\n- " in out  # notes as list items


def test_params_builds_a_llama_shape_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """Llama-2-13B's depth and width, the FFN solved for the count (tests/test_exact_params.py)."""
    from planner.adhoc import model_with_params

    m = model_with_params(13 * 10**9)
    assert (m.hidden_size, m.num_layers) == (5120, 40)
    code, out, _ = run(capsys, ["--params", "13e9", "--gpus", "a100-40g:8", "--top", "1"])
    assert code == 0 and "Llama-style shape" in out
    code, _, err = run(capsys, ["--params", "13e9", "--model", "13b", "--gpus", "a100-40g:8"])
    assert code == 2 and "not both" in err


def test_output_file_and_catalog_filters(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "plan.json"
    code, out, err = run(capsys, [*MAIN_JOB, "--json", "--output", str(target)])
    assert code == 0 and out == "" and "wrote" in err
    assert json.loads(target.read_text())["status"] == "optimal"
    code, out, _ = run(capsys, ["gpus", "--priced", "--min-memory-gib", "90"])
    ids = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and "h200" in ids and "a100-80g" not in ids
    code, out, _ = run(capsys, ["models", "--family", "mixtral"])
    assert code == 0 and all("MoE" in line for line in out.splitlines()) and out.count("\n") >= 2
