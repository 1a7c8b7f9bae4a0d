"""`--params N` keeps N: the ad hoc shape's count lands within 0.5 % of N (issue 12, part 3),
and the plan states the shape and the residual."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from planner.adhoc import FFN_STEP, model_with_params
from planner.architecture import param_counts
from planner.cli import app
from planner.errors import PlannerInputError

COUNTS = (125 * 10**6, 350 * 10**6, 1_300_000_000, 6_700_000_000, 7_500_000_000, 13 * 10**9, 30 * 10**9,
          70 * 10**9, 175 * 10**9, 405 * 10**9, 10**12)


@pytest.mark.parametrize("params", COUNTS)
def test_the_shape_keeps_the_count_within_half_a_percent(params: int) -> None:
    total = param_counts(model_with_params(params)).total
    assert abs(total - params) <= 0.005 * params


def test_7_5b_is_no_longer_snapped_to_a_smaller_standard_shape() -> None:
    """The standard shape nearest 7.5B has 7,336,120,704 parameters (-2.2 %); the solved FFN keeps 7.5B."""
    m = model_with_params(7_500_000_000)
    assert abs(param_counts(m).total - 7_500_000_000) <= 3 * m.num_layers * m.hidden_size * FFN_STEP // 2


@pytest.mark.parametrize("params", COUNTS)
def test_the_shape_stays_llama_like_and_tp_splittable(params: int) -> None:
    """Solving the FFN does not distort the shape: SwiGLU's 8/3 x hidden within 20 %, a width every TP
    degree up to 8 divides, depth = hidden / 128 as in the family."""
    m = model_with_params(params)
    assert m.ffn_size % FFN_STEP == 0
    assert 0.8 <= m.ffn_size / (8 * m.hidden_size / 3) <= 1.2
    assert m.num_layers == round(m.hidden_size / 128) and m.num_heads * m.head_dim == m.hidden_size


def test_a_count_no_shape_reaches_is_an_input_error() -> None:
    with pytest.raises(PlannerInputError, match="no Llama-style shape"):
        model_with_params(1_000_000)  # the 32,000-token embeddings alone are 8.2M


def test_the_plan_states_the_shape_and_the_residual() -> None:
    m = model_with_params(7_500_000_000)
    total = param_counts(m).total
    result = CliRunner().invoke(app, ["--params", "7.5B", "--gpus", "a100-40g:8", "--top", "1"])
    assert result.exit_code == 0
    unwrapped = " ".join(x.strip() for x in result.output.splitlines())  # assumptions wrap at the terminal's width
    line = unwrapped[unwrapped.index("model: --params"):]
    for piece in (f"hidden {m.hidden_size}", f"{m.num_layers} layers", f"{m.num_heads} heads", f"FFN {m.ffn_size}",
                  f"{total:,} parameters", f"{total - 7_500_000_000:+,}"):
        assert piece in line
    assert "ad hoc 7.5B (7.50B params)" in result.output
