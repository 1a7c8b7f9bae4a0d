"""Hugging Face config.json -> Model, for checkpoints the catalog does not list.

Reads the JSON itself (no transformers import). One reader per `model_type`
maps that family's field names onto Model, with the defaults of the matching
transformers configuration class (LlamaConfig, GPT2Config, FalconConfig, ...)
for fields a config.json leaves out; shapes follow transformers'
models/<type>/modeling_<type>.py, and THUDM's modeling_chatglm.py for ChatGLM.
Encodings match catalogs/models.toml, so a config and the catalog entry of the
same model give the same parameter tensors.

Local files only: `planner.hf_cache` finds a config for a path or for an
org/name in the local Hugging Face hub cache; nothing is downloaded.

Left out: published counts (published_params 0, label ""), and what Model
cannot express, which raises PlannerInputError: DeepSeek-V3's multi-head
latent attention, Qwen2-MoE's gated shared expert, OPT's embedding projection.
Encoder-decoder models (T5, mT5, BART, ...: an encoder stack, a decoder stack
with cross-attention, relative or learned positions of their own) are refused
by name rather than read as a decoder-only stack, which would miscount both
the parameters and the activations.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from planner.errors import PlannerInputError
from planner.specs import Mla, Model, Moe, Norm

Config = Mapping[str, Any]

# A config gives the longest context a model accepts, not its pretraining
# length; plans default to no more than Llama-3's, Gemma-2's and Mistral's 8192.
DEFAULT_SEQ_LEN_CAP = 8192
BLOOM_SEQ_LEN = 2048  # bigscience/bloom model card: trained at 2048 tokens; ALiBi leaves config.json without a length
FALCON_MAX_POSITIONS = 2048  # FalconConfig default; tiiuae/falcon-7b and -40b configs omit the field
OPT_POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding keeps 2 rows beyond max_position_embeddings

# Tanh GeLUs written in Python (GPT-2's gelu_new, GPT-NeoX's gelu_fast) save their
# intermediates for backward; see activations.mlp_saved_tensors.
_PLAIN_ACTIVATIONS = {"gelu_new": "gelu-tanh", "gelu_fast": "gelu-tanh", "gelu_pytorch_tanh": "gelu"}
_GATED_ACTIVATIONS = {"silu": "swiglu", "swish": "swiglu"} | dict.fromkeys(
    ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh"), "geglu"
)

# Older spellings transformers still accepts (its configs' attribute_map and kwargs).
_ALIASES: dict[str, dict[str, str]] = {
    "bloom": {"n_embed": "hidden_size", "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"},
    "falcon": {"n_embed": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads", "n_head_kv": "num_kv_heads"},
}


# ---- field access -----------------------------------------------------------


def _get(c: Config, name: str, default: Any = None) -> Any:
    value = c.get(name)
    return default if value is None else value


def _int(c: Config, name: str, default: int | None = None, minimum: int = 1) -> int:
    """An integer field of at least `minimum` (positive by default; a count of 0 or more with minimum 0)."""
    value = _get(c, name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise PlannerInputError(f"field '{name}' must be {what}, got {value!r}")
    return value


def _opt_int(c: Config, name: str) -> int | None:
    return None if c.get(name) is None else _int(c, name)


def _bool(c: Config, name: str, default: bool) -> bool:
    value = _get(c, name, default)
    if not isinstance(value, bool):
        raise PlannerInputError(f"field '{name}' must be true or false, got {value!r}")
    return value


def _require(c: Config, names: tuple[str, ...]) -> None:
    missing = [n for n in names if c.get(n) is None]
    if missing:
        raise PlannerInputError(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")


def _dropout(c: Config, defaults: Mapping[str, float]) -> bool:
    """Dropout is active in training when any of the family's probabilities is above 0."""
    probabilities = {name: _get(c, name, p) for name, p in defaults.items()}
    for name, p in probabilities.items():
        if isinstance(p, bool) or not isinstance(p, int | float):
            raise PlannerInputError(f"field '{name}' must be a probability, got {p!r}")
    return any(p > 0 for p in probabilities.values())


def _context(c: Config, max_positions: int) -> tuple[int, int]:
    """(default_seq_len, max_seq_len): the RoPE-scaling original length when the
    config extends one (Llama-3.1, Phi-3-128k), capped at DEFAULT_SEQ_LEN_CAP."""
    scaling = c.get("rope_scaling") if isinstance(c.get("rope_scaling"), Mapping) else {}
    original = {"original_max_position_embeddings": scaling.get("original_max_position_embeddings")
                or c.get("original_max_position_embeddings")}
    trained = _int(original, "original_max_position_embeddings", max_positions)
    return min(trained, max_positions, DEFAULT_SEQ_LEN_CAP), max_positions


def _biases(qkv: bool, out: bool, mlp: bool) -> dict[str, bool]:
    """Model.linear_bias covers the attention output projection and the MLP together."""
    if out != mlp:
        raise PlannerInputError(
            f"bias on the attention output ({out}) differs from the MLP's ({mlp}); the planner models them together"
        )
    return {"qkv_bias": qkv, "linear_bias": out}


def _shape(
    *, hidden: int, layers: int, heads: int, ffn: int, gated: bool, activation: str, vocab: int,
    tied: bool, norm: Norm, context: tuple[int, int], kv_heads: int | None = None, head_dim: int | None = None,
    norms: int = 2, biases: Mapping[str, bool] | None = None, learned_positions: int = 0, embedding_norm: bool = False,
    parallel: bool = False, dropout: bool = False, moe: Moe | None = None,
) -> dict[str, Any]:
    """The architecture fields of Model; head_dim defaults to hidden / heads, KV heads to heads."""
    kv = heads if kv_heads is None else kv_heads
    if head_dim is None:
        if hidden % heads:
            raise PlannerInputError(f"hidden size {hidden} is not a multiple of {heads} heads; give head_dim")
        head_dim = hidden // heads
    if heads % kv:
        raise PlannerInputError(f"{heads} attention heads are not a multiple of {kv} key/value heads")
    plain = _PLAIN_ACTIVATIONS.get(activation, activation)
    return {
        "hidden_size": hidden, "num_layers": layers, "num_heads": heads, "num_kv_heads": kv, "head_dim": head_dim,
        "attention_width": heads * head_dim, "ffn_size": ffn, "ffn_matrices": 3 if gated else 2,
        "ffn_activation": _GATED_ACTIVATIONS.get(activation, f"{activation}-glu") if gated else plain,
        "vocab_size": vocab, "tied_embeddings": tied, "learned_positions": learned_positions, "norm": norm,
        "norms_per_layer": norms, "embedding_norm": embedding_norm,
        **(biases or {"qkv_bias": False, "linear_bias": False}),
        "parallel_block": parallel, "dropout": dropout, "default_seq_len": context[0], "max_seq_len": context[1],
        "moe": moe,
    }


# ---- one reader per model_type ----------------------------------------------


_DECODER_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
                   "max_position_embeddings")


def _decoder(c: Config, *, tied: bool, head_dim: int | None = None, norms: int = 2,
             biases: Mapping[str, bool] | None = None, dropout: tuple[str, ...] = ("attention_dropout",)) -> dict[str, Any]:
    """The Llama block that Mistral, Mixtral, Qwen2, Gemma, Gemma-2 and Phi-3 share:
    RoPE, RMSNorm, a gated MLP; Gemma-2 adds post-norms (4 per layer)."""
    _require(c, _DECODER_FIELDS)
    return _shape(
        hidden=_int(c, "hidden_size"), layers=_int(c, "num_hidden_layers"), heads=_int(c, "num_attention_heads"),
        kv_heads=_opt_int(c, "num_key_value_heads"), head_dim=_opt_int(c, "head_dim") or head_dim,
        ffn=_int(c, "intermediate_size"), gated=True,
        activation=_get(c, "hidden_activation") or _get(c, "hidden_act", "silu"), vocab=_int(c, "vocab_size"),
        tied=_bool(c, "tie_word_embeddings", tied), norm=Norm.RMSNORM, norms=norms, biases=biases,
        dropout=_dropout(c, dict.fromkeys(dropout, 0.0)), context=_context(c, _int(c, "max_position_embeddings")),
    )


def _llama(c: Config) -> dict[str, Any]:
    attention = _bool(c, "attention_bias", False)  # q, k, v and o_proj
    return _decoder(c, tied=False, biases=_biases(attention, attention, _bool(c, "mlp_bias", False)))


def _qwen3(c: Config) -> dict[str, Any]:
    """Qwen3: the Llama block with an RMSNorm over each head of q and k (head_dim given)."""
    attention = _bool(c, "attention_bias", False)
    return _decoder(c, tied=False, biases=_biases(attention, attention, False)) | {"qk_norm": True}


def _qwen3_moe(c: Config) -> dict[str, Any]:
    """Qwen3-MoE: Qwen3 attention, every layer's MLP routed (no shared expert)."""
    if _get(c, "decoder_sparse_step", 1) != 1 or _get(c, "mlp_only_layers", []):
        raise PlannerInputError("decoder_sparse_step other than 1 or mlp_only_layers (dense layers among MoE ones) are not modelled")
    _require(c, ("moe_intermediate_size", "num_experts", "num_experts_per_tok"))
    experts = Moe(num_experts=_int(c, "num_experts"), top_k=_int(c, "num_experts_per_tok"), shared_experts=0,
                  expert_ffn_size=_int(c, "moe_intermediate_size"), dense_layers=0)
    return _qwen3(c) | {"moe": experts}


def _mixtral(c: Config) -> dict[str, Any]:
    arch = _decoder(c, tied=False)
    experts = Moe(num_experts=_int(c, "num_local_experts", 8), top_k=_int(c, "num_experts_per_tok", 2),
                  shared_experts=0, expert_ffn_size=arch["ffn_size"], dense_layers=0)
    return arch | {"moe": experts}


def _qwen2_moe(c: Config) -> dict[str, Any]:
    raise PlannerInputError(
        "qwen2_moe's shared expert (shared_expert_intermediate_size, gated by shared_expert_gate) is not modelled yet; "
        "Moe has one expert size and no shared-expert gate"
    )


def _gpt2(c: Config) -> dict[str, Any]:
    _require(c, ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size"))
    hidden, positions = _int(c, "n_embd"), _int(c, "n_positions")
    return _shape(
        hidden=hidden, layers=_int(c, "n_layer"), heads=_int(c, "n_head"), ffn=_int(c, "n_inner", 4 * hidden),
        gated=False, activation=_get(c, "activation_function", "gelu_new"), vocab=_int(c, "vocab_size"),
        tied=_bool(c, "tie_word_embeddings", True), norm=Norm.LAYERNORM, biases=_biases(True, True, True),
        learned_positions=positions, dropout=_dropout(c, {"resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}),
        context=(min(positions, DEFAULT_SEQ_LEN_CAP), positions),
    )


def _gpt_neox(c: Config) -> dict[str, Any]:
    _require(c, _DECODER_FIELDS)
    attention = _bool(c, "attention_bias", True)  # query_key_value and dense; the MLP always has biases
    return _shape(
        hidden=_int(c, "hidden_size"), layers=_int(c, "num_hidden_layers"), heads=_int(c, "num_attention_heads"),
        ffn=_int(c, "intermediate_size"), gated=False, activation=_get(c, "hidden_act", "gelu"),
        vocab=_int(c, "vocab_size"), tied=_bool(c, "tie_word_embeddings", False), norm=Norm.LAYERNORM,
        biases=_biases(attention, attention, True), parallel=_bool(c, "use_parallel_residual", True),
        dropout=_dropout(c, {"attention_dropout": 0.0, "hidden_dropout": 0.0}),
        context=_context(c, _int(c, "max_position_embeddings")),
    )


def _falcon(c: Config) -> dict[str, Any]:
    """Falcon-7B: multi-query attention, one LayerNorm shared by the parallel
    attention and MLP; new_decoder_architecture (40B, 180B): grouped KV heads
    and a LayerNorm for each branch (num_ln_in_parallel_attn, default 2)."""
    _require(c, ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"))
    hidden, heads = _int(c, "hidden_size"), _int(c, "num_attention_heads")
    new = _bool(c, "new_decoder_architecture", False)
    parallel = new or _bool(c, "parallel_attn", True)
    two_norms = (new and _get(c, "num_ln_in_parallel_attn", 2) == 2) or not parallel
    bias = _bool(c, "bias", False)
    positions = _int(c, "max_position_embeddings", FALCON_MAX_POSITIONS)
    return _shape(
        hidden=hidden, layers=_int(c, "num_hidden_layers"), heads=heads,
        kv_heads=_int(c, "num_kv_heads", heads) if new or not _bool(c, "multi_query", True) else 1,
        ffn=_int(c, "ffn_hidden_size", 4 * hidden), gated=False, activation=_get(c, "activation", "gelu"),
        vocab=_int(c, "vocab_size"), tied=_bool(c, "tie_word_embeddings", True), norm=Norm.LAYERNORM,
        norms=2 if two_norms else 1, biases=_biases(bias, bias, bias), parallel=parallel,
        dropout=_dropout(c, {"hidden_dropout": 0.0, "attention_dropout": 0.0}), context=(positions, positions),
    )


def _bloom(c: Config) -> dict[str, Any]:
    """ALiBi (no position table), a LayerNorm after the word embeddings, a 4h tanh-GeLU MLP."""
    _require(c, ("hidden_size", "n_layer", "n_head", "vocab_size"))
    hidden = _int(c, "hidden_size")
    return _shape(
        hidden=hidden, layers=_int(c, "n_layer"), heads=_int(c, "n_head"), ffn=4 * hidden, gated=False,
        activation="gelu-tanh", vocab=_int(c, "vocab_size"), tied=_bool(c, "tie_word_embeddings", True),
        norm=Norm.LAYERNORM, biases=_biases(True, True, True), embedding_norm=True,
        dropout=_dropout(c, {"hidden_dropout": 0.0, "attention_dropout": 0.0}), context=(BLOOM_SEQ_LEN, BLOOM_SEQ_LEN),
    )


def _opt(c: Config) -> dict[str, Any]:
    _require(c, ("hidden_size", "num_hidden_layers", "num_attention_heads", "ffn_dim", "vocab_size", "max_position_embeddings"))
    hidden, positions = _int(c, "hidden_size"), _int(c, "max_position_embeddings")
    projected = _int(c, "word_embed_proj_dim", hidden)
    if projected != hidden:
        raise PlannerInputError(
            f"word_embed_proj_dim {projected} differs from hidden_size {hidden}: OPT's project_in/project_out are not modelled"
        )
    bias = _bool(c, "enable_bias", True)
    return _shape(
        hidden=hidden, layers=_int(c, "num_hidden_layers"), heads=_int(c, "num_attention_heads"),
        ffn=_int(c, "ffn_dim"), gated=False, activation=_get(c, "activation_function", "relu"),
        vocab=_int(c, "vocab_size"), tied=_bool(c, "tie_word_embeddings", True), norm=Norm.LAYERNORM,
        biases=_biases(bias, bias, bias), learned_positions=positions + OPT_POSITION_OFFSET,
        dropout=_dropout(c, {"dropout": 0.1, "attention_dropout": 0.0, "activation_dropout": 0.0}),
        context=(min(positions, DEFAULT_SEQ_LEN_CAP), positions),
    )


def _chatglm(c: Config) -> dict[str, Any]:
    """ChatGLM-6B: GeLU MLP, LayerNorm, biases everywhere, 2D RoPE, a shared
    input/output embedding (no tie flag: PretrainedConfig's default). ChatGLM2/3
    configs (padded_vocab_size, ffn_hidden_size) use `_chatglm2`."""
    if "padded_vocab_size" in c or "ffn_hidden_size" in c:
        return _chatglm2(c)
    _require(c, ("hidden_size", "num_layers", "num_attention_heads", "inner_hidden_size", "vocab_size", "max_sequence_length"))
    length = _int(c, "max_sequence_length")
    return _shape(
        hidden=_int(c, "hidden_size"), layers=_int(c, "num_layers"), heads=_int(c, "num_attention_heads"),
        ffn=_int(c, "inner_hidden_size"), gated=False, activation="gelu", vocab=_int(c, "vocab_size"),
        tied=_bool(c, "tie_word_embeddings", True), norm=Norm.LAYERNORM, biases=_biases(True, True, True),
        context=(min(length, DEFAULT_SEQ_LEN_CAP), length),
    )


def _chatglm2(c: Config) -> dict[str, Any]:
    """ChatGLM2/3-6B and GLM-4: multi-query groups, SwiGLU (dense_h_to_4h holds gate and up), RMSNorm, an untied output layer."""
    _require(c, ("hidden_size", "num_layers", "num_attention_heads", "ffn_hidden_size", "padded_vocab_size", "seq_length"))
    heads, length = _int(c, "num_attention_heads"), _int(c, "seq_length")
    return _shape(
        hidden=_int(c, "hidden_size"), layers=_int(c, "num_layers"), heads=heads,
        kv_heads=_int(c, "multi_query_group_num", heads) if _bool(c, "multi_query_attention", False) else heads,
        head_dim=_opt_int(c, "kv_channels"), ffn=_int(c, "ffn_hidden_size"), gated=True, activation="silu",
        vocab=_int(c, "padded_vocab_size"), tied=_bool(c, "tie_word_embeddings", False),
        norm=Norm.RMSNORM if _bool(c, "rmsnorm", True) else Norm.LAYERNORM,
        biases=_biases(_bool(c, "add_qkv_bias", False), _bool(c, "add_bias_linear", False), _bool(c, "add_bias_linear", False)),
        dropout=_dropout(c, {"hidden_dropout": 0.0, "attention_dropout": 0.0}), context=(min(length, DEFAULT_SEQ_LEN_CAP), length),
    )


def _deepseek(c: Config) -> dict[str, Any]:
    """DeepSeek-V2/V3: multi-head latent attention and a MoE with shared experts after
    `first_k_dense_replace` dense layers; V3's routing bias (topk_method 'noaux_tc').
    The multi-token-prediction module (num_nextn_predict_layers) is not counted: it is
    not part of the published 671B and serving drops it unless it speculates with it."""
    _require(c, (*_DECODER_FIELDS, "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                 "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok"))
    if _get(c, "moe_layer_freq", 1) != 1:
        raise PlannerInputError(f"moe_layer_freq {c.get('moe_layer_freq')} (MoE every few layers) is not modelled; only 1")
    if _bool(c, "attention_bias", False):
        raise PlannerInputError("attention_bias true is not modelled for multi-head latent attention")
    heads = _int(c, "num_attention_heads")
    mla = Mla(q_lora_rank=_int(c, "q_lora_rank", 0, minimum=0), kv_lora_rank=_int(c, "kv_lora_rank"),
              qk_nope_head_dim=_int(c, "qk_nope_head_dim"), qk_rope_head_dim=_int(c, "qk_rope_head_dim"),
              v_head_dim=_int(c, "v_head_dim"))
    arch = _decoder({**c, "num_key_value_heads": heads, "head_dim": mla.qk_head_dim}, tied=False)
    moe = Moe(num_experts=_int(c, "n_routed_experts"), top_k=_int(c, "num_experts_per_tok"),
              shared_experts=_int(c, "n_shared_experts", 0, minimum=0), expert_ffn_size=_int(c, "moe_intermediate_size"),
              dense_layers=_int(c, "first_k_dense_replace", 0, minimum=0), router_bias=_get(c, "topk_method") == "noaux_tc")
    return arch | {"attention_width": heads * mla.v_head_dim, "mla": mla, "moe": moe}


_READERS: dict[str, Callable[[Config], dict[str, Any]]] = {
    "llama": _llama,
    "mistral": lambda c: _decoder(c, tied=False),
    "mixtral": _mixtral,
    "qwen2": lambda c: _decoder(c, tied=False, biases=_biases(True, False, False)),
    "qwen2_moe": _qwen2_moe,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3_moe,
    "gemma": lambda c: _decoder(c, tied=True, head_dim=256),
    "gemma2": lambda c: _decoder(c, tied=True, head_dim=256, norms=4),
    "phi3": lambda c: _decoder(c, tied=False, dropout=("attention_dropout", "resid_pdrop", "embd_pdrop")),
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "falcon": _falcon,
    "bloom": _bloom,
    "opt": _opt,
    "chatglm": _chatglm,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_READERS)
# transformers' encoder-decoder model types (configs with is_encoder_decoder true by default)
ENCODER_DECODER_MODEL_TYPES: frozenset[str] = frozenset({
    "t5", "mt5", "umt5", "longt5", "t5gemma", "switch_transformers", "bart", "mbart", "plbart", "marian", "pegasus",
    "pegasus_x", "bigbird_pegasus", "led", "blenderbot", "blenderbot-small", "prophetnet", "xlm-prophetnet", "fsmt",
    "m2m_100", "nllb-moe", "seamless_m4t", "whisper", "encoder-decoder", "speech-encoder-decoder", "vision-encoder-decoder",
})


def model_from_config(config: Mapping[str, Any], model_id: str, source: str) -> Model:
    """The Model a Hugging Face config.json describes; errors name `source`."""
    model_type = config.get("model_type")
    if (isinstance(model_type, str) and model_type in ENCODER_DECODER_MODEL_TYPES) or config.get("is_encoder_decoder") is True:
        raise PlannerInputError(
            f"{source}: model_type {model_type!r} is an encoder-decoder model, which the planner does not model; "
            f"it reads decoder-only model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    reader = _READERS.get(model_type) if isinstance(model_type, str) else None
    if reader is None:
        raise PlannerInputError(
            f"{source}: unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)} "
            "(or describe the model in a --catalog file)"
        )
    aliases = _ALIASES.get(model_type, {})
    canonical = {aliases.get(k, k): v for k, v in config.items()}
    try:
        arch = reader(canonical)
    except PlannerInputError as e:
        raise PlannerInputError(f"{source}: {e} (model_type '{model_type}')") from None
    return Model(id=model_id, name=model_id, aliases=(), family=model_type, **arch,
                 published_params=0, published_label="", source=source)


# ---- files and the hub cache ------------------------------------------------


def _model_id(config_file: Path) -> str:
    """'org/name' for a hub-cache snapshot; else the directory's name (the file's
    stem for a file not named config.json), reduced to [A-Za-z0-9._-]."""
    folder = config_file.parent
    repo = folder.parent.parent
    if folder.parent.name == "snapshots" and repo.name.startswith("models--"):
        return repo.name.removeprefix("models--").replace("--", "/")
    name = folder.name if config_file.name == "config.json" else config_file.stem
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "hf-model"


def read_config(path: Path) -> Model:
    """The Model of a config.json file, or of the config.json in directory `path`."""
    config_file = path / "config.json" if path.is_dir() else path
    try:
        text = config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        where = f"no config.json in {path}" if path.is_dir() else f"{path} not found"
        raise PlannerInputError(f"{where}; give a Hugging Face model directory or its config.json") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PlannerInputError(f"cannot read {config_file}: {e}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise PlannerInputError(f"{config_file}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(config, dict):
        raise PlannerInputError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
    return model_from_config(config, _model_id(Path(os.path.abspath(config_file))), f"config.json at {path}")
