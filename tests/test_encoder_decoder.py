"""Encoder-decoder configs (T5, mT5, BART, ...) are refused with one input line naming the model type
and the decoder-only types the planner reads (issue 12, part 3): never a traceback, never a
decoder-only misreading of the encoder and cross-attention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.cli import main
from planner.errors import PlannerInputError
from planner.hf_config import SUPPORTED_MODEL_TYPES, model_from_config

# Field subsets of the public config.json files (google-t5/t5-base, google/mt5-base, facebook/bart-large)
T5_BASE = {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "d_model": 768, "d_ff": 3072, "d_kv": 64,
           "num_heads": 12, "num_layers": 12, "vocab_size": 32128, "is_encoder_decoder": True}
MT5_BASE = {"model_type": "mt5", "d_model": 768, "d_ff": 2048, "d_kv": 64, "num_heads": 12, "num_layers": 12,
            "num_decoder_layers": 12, "vocab_size": 250112, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
BART_LARGE = {"model_type": "bart", "d_model": 1024, "encoder_layers": 12, "decoder_layers": 12, "encoder_attention_heads": 16,
              "decoder_attention_heads": 16, "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096, "vocab_size": 50265,
              "max_position_embeddings": 1024, "is_encoder_decoder": True}
# A decoder-only type whose config says it is an encoder-decoder: refused too, not read as llama
LLAMA_SHAPED_SEQ2SEQ = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
                        "num_hidden_layers": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
                        "is_encoder_decoder": True}


@pytest.mark.parametrize(("config", "name"), [(T5_BASE, "t5"), (MT5_BASE, "mt5"), (BART_LARGE, "bart"), (LLAMA_SHAPED_SEQ2SEQ, "llama")])
def test_encoder_decoder_configs_are_refused_by_name(config: dict, name: str) -> None:
    with pytest.raises(PlannerInputError, match=f"model_type '{name}' is an encoder-decoder model") as e:
        model_from_config(config, "m", "config.json at m")
    assert "llama" in str(e.value) and "--catalog" not in str(e.value)  # no advice to describe it as a decoder


@pytest.mark.parametrize("config", [T5_BASE, MT5_BASE, BART_LARGE])
def test_the_cli_refuses_in_one_line_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict) -> None:
    folder = tmp_path / config["model_type"]
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    code = main(["--model", str(folder), "--gpus", "a100-40g:8"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert f"'{config['model_type']}' is an encoder-decoder model" in err
    assert all(t in err for t in SUPPORTED_MODEL_TYPES)


def test_decoder_only_configs_still_read() -> None:
    config = {**LLAMA_SHAPED_SEQ2SEQ, "is_encoder_decoder": False}
    assert model_from_config(config, "m", "config.json at m").num_layers == 32
