"""config.json -> Model: real Hugging Face configs give the catalog's tensors, and bad input is one line.

Fixtures in tests/data/hf_configs/ reproduce the config.json of each model's
Hugging Face repository; their architecture fields were cross-checked against
independent public copies and the catalog's sources.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from planner import flops
from planner.architecture import param_counts
from planner.catalog import load_catalog
from planner.errors import PlannerInputError
from planner.hf_cache import find_in_hf_cache, hf_hub_cache_dir, resolve_model_path
from planner.hf_config import DEFAULT_SEQ_LEN_CAP, SUPPORTED_MODEL_TYPES, model_from_config, read_config
from planner.serving import kv_bytes_per_token
from planner.specs import KvFormat

CONFIGS = Path(__file__).parent / "data" / "hf_configs"
CATALOG = load_catalog()

# fixture -> catalog id of the same checkpoint
IN_CATALOG = {
    "llama-2-7b": "llama2-7b",
    "llama-3.1-8b": "llama3.1-8b",
    "mistral-7b-v0.1": "mistral-7b",
    "mixtral-8x7b-v0.1": "mixtral-8x7b",
    "qwen2.5-7b": "qwen2.5-7b",
    "gemma-2-9b": "gemma2-9b",
    "phi-3-mini-4k-instruct": "phi3-mini",
    "gpt2": "gpt2",
    "falcon-7b": "falcon-7b",
    "falcon-40b": "falcon-40b",
    "bloom": "bloom-176b",
    "chatglm-6b": "chatglm-6b",
    "deepseek-v3": "deepseek-v3",
    "qwen3-8b-base": "qwen3-8b",
}
# What sizes weights, gradients, optimizer states, activations and the KV cache.
MEMORY_FIELDS = (
    "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "attention_width", "ffn_size",
    "ffn_matrices", "vocab_size", "tied_embeddings", "learned_positions", "norm", "norms_per_layer", "qkv_bias",
    "linear_bias", "moe", "mla", "qk_norm",
)


def config(name: str) -> dict[str, Any]:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def from_config(name: str, **changes: Any) -> Any:
    return model_from_config({**config(name), **changes}, name, f"test {name}")


def error_of(fn: Any, *args: Any) -> str:
    with pytest.raises(PlannerInputError) as e:
        fn(*args)
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("fixture", "catalog_id"), IN_CATALOG.items())
def test_config_gives_the_catalog_models_parameters(fixture: str, catalog_id: str) -> None:
    """Same tensors as the catalog entry (whose counts equal the published ones, test_catalog)."""
    model = read_config(CONFIGS / f"{fixture}.json")
    entry = CATALOG.model(catalog_id)
    assert param_counts(model) == param_counts(entry)
    assert {f: getattr(model, f) for f in MEMORY_FIELDS} == {f: getattr(entry, f) for f in MEMORY_FIELDS}


@pytest.mark.parametrize(("fixture", "catalog_id"), IN_CATALOG.items())
def test_config_agrees_with_the_catalog_beyond_shapes(fixture: str, catalog_id: str) -> None:
    """Activation, block layout and dropout drive activation memory; the config's longest context is max_seq_len."""
    model, entry = read_config(CONFIGS / f"{fixture}.json"), CATALOG.model(catalog_id)
    for field in ("ffn_activation", "embedding_norm", "parallel_block", "dropout", "max_seq_len"):
        assert getattr(model, field) == getattr(entry, field), field


@pytest.mark.parametrize(
    ("fixture", "params"),
    [
        ("gpt-neox-20b", 20_554_567_680),  # EleutherAI/gpt-neox-20b model card, "n_parameters"
        ("gemma-7b", 786_432_000 + 7_751_248_896),  # Gemma Team 2024 Table 2 non-embedding count + 256000 x 3072 HF embedding
        ("opt-125m", 125_239_296),  # OPTForCausalLM(facebook/opt-125m): 50272x768 tied, 2050x768 positions, 12 biased blocks
    ],
)
def test_models_outside_the_catalog_match_published_counts(fixture: str, params: int) -> None:
    assert param_counts(read_config(CONFIGS / f"{fixture}.json")).total == params


def test_gpt_neox_is_a_parallel_block_with_two_norms_and_an_untied_head() -> None:
    m = read_config(CONFIGS / "gpt-neox-20b.json")
    assert (m.parallel_block, m.norms_per_layer, m.tied_embeddings, m.ffn_activation) == (True, 2, False, "gelu-tanh")
    assert (m.head_dim, m.max_seq_len, m.learned_positions, m.dropout) == (96, 2048, 0, False)


def test_chatglm2_reads_multi_query_groups_and_swiglu() -> None:
    """ChatGLM2-6B (modeling_chatglm.py): qkv of 4096 + 2 x 2 x 128 with bias, SwiGLU 13696, RMSNorm, untied output layer."""
    m = read_config(CONFIGS / "chatglm2-6b.json")
    assert (m.num_kv_heads, m.kv_width, m.ffn_matrices, m.ffn_activation) == (2, 256, 3, "swiglu")
    assert (m.norm, m.qkv_bias, m.linear_bias, m.tied_embeddings, m.max_seq_len) == ("rmsnorm", True, False, False, 32768)
    layer = 4096 * 4608 + 4608 + 4096 * 4096 + 3 * 4096 * 13696 + 2 * 4096
    assert param_counts(m).total == 2 * 65024 * 4096 + 28 * layer + 4096


def test_opt_175b_shape_on_an_opt_config_gives_the_catalog_entry() -> None:
    """No public config.json for OPT-175B: metaseq's 175B shape on the facebook/opt-125m config."""
    shape = {"hidden_size": 12288, "word_embed_proj_dim": 12288, "ffn_dim": 49152, "num_hidden_layers": 96,
             "num_attention_heads": 96}
    m = from_config("opt-125m", **shape)
    entry = CATALOG.model("opt-175b")
    assert param_counts(m) == param_counts(entry)
    assert (m.learned_positions, m.dropout, m.ffn_activation) == (entry.learned_positions, entry.dropout, entry.ffn_activation)


def test_default_seq_len_is_the_pretraining_length_the_config_shows() -> None:
    """Llama-3.1 keeps its 8192 pretraining length in rope_scaling; long configs are capped."""
    assert read_config(CONFIGS / "llama-3.1-8b.json").default_seq_len == 8192
    assert read_config(CONFIGS / "llama-2-7b.json").default_seq_len == 4096
    assert read_config(CONFIGS / "qwen2.5-7b.json").default_seq_len == DEFAULT_SEQ_LEN_CAP
    longrope = from_config("phi-3-mini-4k-instruct", max_position_embeddings=131072)
    assert (longrope.default_seq_len, longrope.max_seq_len) == (4096, 131072)


def test_model_carries_the_given_id_and_source_and_no_published_count() -> None:
    m = model_from_config(config("gpt2"), "my-gpt2", "config.json at /x")
    assert (m.id, m.name, m.family, m.source) == ("my-gpt2", "my-gpt2", "gpt2", "config.json at /x")
    assert (m.published_params, m.published_label, m.aliases) == (0, "", ())


def test_bloom_accepts_the_older_field_names() -> None:
    """bigscience/bloom-560m's config spells the width n_embed and the heads num_attention_heads."""
    c = config("bloom")
    c["n_embed"], c["num_attention_heads"] = c.pop("hidden_size"), c.pop("n_head")
    assert model_from_config(c, "bloom", "test") == model_from_config(config("bloom"), "bloom", "test")


def test_directory_input_reads_its_config_json(tmp_path: Path) -> None:
    folder = tmp_path / "My Model-7B"
    folder.mkdir()
    shutil.copy(CONFIGS / "mistral-7b-v0.1.json", folder / "config.json")
    m = read_config(folder)
    assert (m.id, m.source) == ("My-Model-7B", f"config.json at {folder}")
    assert m == dataclasses.replace(read_config(folder / "config.json"), source=m.source)
    assert read_config(CONFIGS / "gpt2.json").id == "gpt2"


def _fake_snapshot(cache: Path, repo: str, revision: str, fixture: str, mtime: float) -> Path:
    snapshot = cache / repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    shutil.copy(CONFIGS / f"{fixture}.json", snapshot / "config.json")
    os.utime(snapshot, (mtime, mtime))
    return snapshot / "config.json"


def test_hf_cache_prefers_the_revision_refs_main_names(tmp_path: Path) -> None:
    repo = "models--meta-llama--Llama-2-7b-hf"
    pinned = _fake_snapshot(tmp_path, repo, "aaaa", "llama-2-7b", mtime=1_000)
    _fake_snapshot(tmp_path, repo, "bbbb", "gpt2", mtime=2_000)
    (tmp_path / repo / "refs").mkdir()
    (tmp_path / repo / "refs" / "main").write_text("aaaa\n")
    found = find_in_hf_cache("meta-llama/Llama-2-7b-hf", tmp_path)
    assert found == pinned
    model = read_config(found)
    assert (model.id, model.family) == ("meta-llama/Llama-2-7b-hf", "llama")


def test_hf_cache_without_refs_takes_the_newest_snapshot(tmp_path: Path) -> None:
    repo = "models--org--name"
    _fake_snapshot(tmp_path, repo, "old", "gpt2", mtime=1_000)
    newest = _fake_snapshot(tmp_path, repo, "new", "opt-125m", mtime=2_000)
    (tmp_path / repo / "snapshots" / "empty").mkdir()
    assert find_in_hf_cache("org/name", tmp_path) == newest


def test_hf_cache_misses_are_none(tmp_path: Path) -> None:
    assert find_in_hf_cache("org/absent", tmp_path) is None
    assert find_in_hf_cache("no-org", tmp_path) is None
    assert find_in_hf_cache("a/b/c", tmp_path) is None


def test_hf_cache_location_follows_huggingface_hub() -> None:
    assert hf_hub_cache_dir({"HF_HUB_CACHE": "/c", "HF_HOME": "/h"}) == Path("/c")
    assert hf_hub_cache_dir({"HF_HOME": "/h", "XDG_CACHE_HOME": "/x"}) == Path("/h/hub")
    assert hf_hub_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/huggingface/hub")
    assert hf_hub_cache_dir({}) == Path("~/.cache/huggingface/hub").expanduser()


def test_resolve_model_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths and cached org/name resolve; anything else is left to the catalog."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    cached = _fake_snapshot(tmp_path / "hub", "models--Qwen--Qwen2.5-7B", "cafe", "qwen2.5-7b", mtime=1_000)
    folder = cached.parent
    assert resolve_model_path("Qwen/Qwen2.5-7B") == cached
    assert resolve_model_path("qwen/qwen2.5-7b") == cached
    assert resolve_model_path(str(folder)) == folder
    assert resolve_model_path(str(cached)) == cached
    assert resolve_model_path("llama2-7b") is None
    assert resolve_model_path("meta-llama/Llama-2-7b-hf") is None
    assert resolve_model_path(str(tmp_path)) is None  # a directory without config.json


def test_missing_fields_are_named_with_the_file(tmp_path: Path) -> None:
    c = config("llama-2-7b")
    del c["hidden_size"], c["vocab_size"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(c))
    message = error_of(read_config, path)
    assert "missing fields hidden_size, vocab_size" in message
    assert str(path) in message


def test_unknown_model_type_lists_the_supported_ones() -> None:
    message = error_of(model_from_config, {"model_type": "mamba"}, "m", "config.json at /x")
    assert "'mamba'" in message and "/x" in message
    assert all(t in message for t in SUPPORTED_MODEL_TYPES)
    assert "supported" in error_of(model_from_config, {"hidden_size": 8}, "m", "config.json at /x")


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{\n  "model_type": "llama",\n  "hidden_size": 4096,,\n}\n')
    message = error_of(read_config, path)
    assert str(path) in message and "line 3" in message
    path.write_text("[1, 2]")
    assert "JSON object" in error_of(read_config, path)


def test_missing_file_or_config_is_named(tmp_path: Path) -> None:
    assert "no config.json in" in error_of(read_config, tmp_path)
    assert "not found" in error_of(read_config, tmp_path / "absent.json")


def test_deepseek_v3_reads_mla_and_its_moe_to_the_published_671b() -> None:
    """DeepSeek-AI 2024 (arXiv:2412.19437): 671B total (the 14B multi-token-prediction module aside),
    37B activated per token; MLA caches kv_lora_rank + qk_rope_head_dim = 576 values per token and layer."""
    model = read_config(CONFIGS / "deepseek-v3.json")
    assert model.mla is not None and model.mla.qk_head_dim == 192 and model.attention_width == 128 * 128
    assert model.moe is not None and model.moe.router_bias and model.moe.dense_layers == 3
    assert param_counts(model).total == 671_026_419_200
    assert 36.5e9 < flops.linear_params_per_token(model) + model.hidden_size * model.vocab_size < 38e9
    assert kv_bytes_per_token(model, KvFormat.BF16) == 61 * 576 * 2
    # V2-Lite's shape: no q latent (q_lora_rank null), no routing bias
    lite = from_config("deepseek-v3", q_lora_rank=None, topk_method="greedy")
    assert lite.mla is not None and lite.mla.q_lora_rank == 0 and not lite.moe.router_bias
    h, q_out, q_lora = 7168, 128 * 192, 1536  # one q projection instead of q_a, its norm and q_b; 256 biases x 58 MoE layers
    assert param_counts(lite).total - param_counts(model).total == 61 * (h * q_out - (h * q_lora + q_lora + q_lora * q_out)) - 256 * 58


def test_deepseek_moe_every_other_layer_is_refused() -> None:
    message = error_of(lambda: from_config("deepseek-v3", moe_layer_freq=2))
    assert "moe_layer_freq 2" in message and "not modelled" in message


@pytest.mark.parametrize(
    ("fixture", "changes", "expected"),
    [
        ("mixtral-8x7b-v0.1", {"model_type": "qwen2_moe"}, "shared expert"),
        ("opt-125m", {"word_embed_proj_dim": 512}, "project_in"),  # facebook/opt-350m
        ("llama-2-7b", {"mlp_bias": True}, "bias on the attention output"),
        ("llama-2-7b", {"num_key_value_heads": 5}, "not a multiple"),
        ("llama-2-7b", {"hidden_size": "4096"}, "positive integer"),
        ("gpt2", {"resid_pdrop": "0.1"}, "probability"),
        ("falcon-7b", {"parallel_attn": "yes"}, "true or false"),
    ],
)
def test_what_the_model_spec_cannot_express_is_refused(fixture: str, changes: dict[str, Any], expected: str) -> None:
    assert expected in error_of(lambda: from_config(fixture, **changes))


def test_a_config_json_plans_like_its_catalog_entry(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue acceptance: a user with only a config.json gets the catalog entry's plan."""
    import json as json_module

    from planner.cli import main

    path = str(CONFIGS / "llama-2-7b.json")
    assert main(["--model", path, "--gpus", "a100-40g:8", "--json"]) == 0
    from_config = json_module.loads(capsys.readouterr().out)["plans"]
    assert main(["--model", "llama2-7b", "--gpus", "a100-40g:8", "--json"]) == 0
    from_catalog = json_module.loads(capsys.readouterr().out)["plans"]
    assert [(p["gpu_count"], p["total_bytes"], p["precision"], p["zero_stage"]) for p in from_config] == [
        (p["gpu_count"], p["total_bytes"], p["precision"], p["zero_stage"]) for p in from_catalog
    ]
    assert main(["--model", "./missing/config.json", "--gpus", "a100-40g:8"]) == 2
    assert "no config.json at" in capsys.readouterr().err


QWEN3_8B = {"model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
            "tie_word_embeddings": False, "max_position_embeddings": 40960, "attention_bias": False}
QWEN3_30B_A3B = {**QWEN3_8B, "model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 48,
                 "num_key_value_heads": 4, "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
                 "decoder_sparse_step": 1, "mlp_only_layers": []}
QWEN3_235B_A22B = {**QWEN3_30B_A3B, "hidden_size": 4096, "moe_intermediate_size": 1536, "num_hidden_layers": 94,
                   "num_attention_heads": 64}


@pytest.mark.parametrize(
    ("config", "total_b", "active_b"),
    [  # the Qwen3 model cards: parameters, rounded as printed (8B: 6.95B non-embedding)
        (QWEN3_8B, 8.2, None),
        (QWEN3_30B_A3B, 30.5, 3.3),
        (QWEN3_235B_A22B, 235, 22),
    ],
)
def test_qwen3_and_qwen3_moe_give_the_model_cards_counts(config: dict[str, Any], total_b: float, active_b: float | None) -> None:
    """Qwen3 adds an RMSNorm over each head of q and k (2 x head_dim per layer)."""
    model = model_from_config(config, "qwen3", "test")
    assert model.qk_norm and (model.moe is None) == (config["model_type"] == "qwen3")
    total = param_counts(model).total
    digits = len(str(total_b).split(".")[1]) if "." in str(total_b) else 0
    assert round(total / 1e9, digits) == total_b
    if active_b is not None:
        active = flops.linear_params_per_token(model) + model.hidden_size * model.vocab_size  # + the embedding row
        assert abs(active / 1e9 - active_b) / active_b < 0.02  # cards print 3.3B for 3.35B with the embedding row
    if config is QWEN3_8B:
        assert total - 2 * 151936 * 4096 == 6_946_075_648  # "6.95B non-embedding"
