"""catalogs/*.toml -> frozen specs, validated once, names resolved with suggestions.

A catalog file holds `[[gpu]]` and/or `[[model]]` entries. The packaged files
come first; user files (`--catalog FILE`, or paths in $PLANNER_CATALOG
separated by the OS path separator) add entries or override them field by
field: an entry whose `id` already exists is merged over the existing one, so
a user file can change just a price.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from planner.architecture import param_counts
from planner.errors import PlannerInputError, unknown_name
from planner.specs import DEFAULT_MATMUL_EFFICIENCY, DEFAULT_NETWORK_GBPS, DEFAULT_PCIE_GBPS, Gpu, Mla, Model, Moe, Norm, Price

MIB_BYTES = 2**20
T = TypeVar("T", Gpu, Model)
ENV_VAR = "PLANNER_CATALOG"


def packaged_catalog_dir() -> Path:
    """catalogs/ inside the installed package, or at the root of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "catalogs", here.parent / "catalogs"):
        if (candidate / "gpus.toml").is_file():
            return candidate
    raise PlannerInputError(f"packaged catalogs not found next to {here}; reinstall the package (pip install .)")


def normalize(name: str) -> str:
    """Case, spaces, underscores and dots do not matter in names: 'Llama_2 13B' == 'llama-2-13b'."""
    return re.sub(r"[\s_]+", "-", name.strip().lower())


@dataclass(frozen=True)
class Catalog:
    gpus: tuple[Gpu, ...]
    models: tuple[Model, ...]
    files: tuple[str, ...]

    def gpu(self, name: str) -> Gpu:
        return _resolve("GPU", name, self.gpus)

    def model(self, name: str) -> Model:
        return _resolve("model", name, self.models)


def _resolve(kind: str, name: str, entries: Sequence[T]) -> T:
    index = _name_index(entries)
    key = normalize(name)
    found = index.get(key) or index.get(key.replace(".", "-"))
    if found is None:
        raise unknown_name(kind, name, {normalize(n): e.id for e in entries for n in (e.id, *e.aliases)})
    return found


def _name_index(entries: Sequence[T]) -> dict[str, T]:
    index: dict[str, T] = {}
    for e in entries:
        for n in (e.id, *e.aliases):
            index[normalize(n)] = e
            index[normalize(n).replace(".", "-")] = e
    return index


# ---- field validation -------------------------------------------------------

Check = Callable[[Any], bool]


@dataclass(frozen=True)
class Field:
    name: str
    kind: type | tuple[type, ...]
    required: bool = True
    check: Check | None = None
    rule: str = ""


def _pos(x: Any) -> bool:
    return x > 0


def _nonneg(x: Any) -> bool:
    return x >= 0


GPU_FIELDS = (
    Field("id", str),
    Field("name", str),
    Field("aliases", list, required=False),
    Field("vendor", str),
    Field("memory_label", str),
    Field("usable_memory_mib", int, check=_pos, rule="a positive integer (MiB)"),
    Field("memory_source", str),
    Field("fp32_tflops", (int, float), check=_pos, rule="positive"),
    Field("tf32_tflops", (int, float), check=_nonneg, rule=">= 0 (0 = unsupported)"),
    Field("bf16_tflops", (int, float), check=_nonneg, rule=">= 0 (0 = unsupported)"),
    Field("fp16_tflops", (int, float), check=_pos, rule="positive"),
    Field("fp8_tflops", (int, float), check=_nonneg, rule=">= 0 (0 = unsupported)"),
    Field("supports_bf16", bool),
    Field("supports_fp8", bool),
    Field("memory_bandwidth_gbps", (int, float), check=_pos, rule="positive (GB/s)"),
    Field("interconnect", str),
    Field("interconnect_gbps", (int, float), check=_pos, rule="positive (GB/s, both directions)"),
    Field("gpus_per_node", int, check=_pos, rule="a positive integer"),
    Field("price", dict, required=False),
    Field("source", str),
    Field("network_gbps", (int, float), required=False, check=_pos, rule="positive (GB/s per GPU, one direction, between nodes)"),
    Field("pcie_gbps", (int, float), required=False, check=_pos, rule="positive (GB/s, one direction, GPU to host)"),
    Field("matmul_efficiency", (int, float), required=False, check=lambda x: 0 < x <= 1, rule="within (0, 1]"),
    Field("fp8_matmul_efficiency", (int, float), required=False, check=lambda x: 0 <= x <= 1, rule="within [0, 1]"),
    Field("perf_source", str, required=False),
)

PRICE_FIELDS = (
    Field("usd_per_hour", (int, float), check=_pos, rule="positive (USD per GPU-hour)"),
    Field("provider", str),
    Field("offer", str),
    Field("date", date, rule="a TOML date such as 2026-09-25"),
    Field("source", str),
)

MODEL_FIELDS = (
    Field("id", str),
    Field("name", str),
    Field("aliases", list, required=False),
    Field("family", str),
    Field("hidden_size", int, check=_pos, rule="a positive integer"),
    Field("num_layers", int, check=_pos, rule="a positive integer"),
    Field("num_heads", int, check=_pos, rule="a positive integer"),
    Field("num_kv_heads", int, check=_pos, rule="a positive integer"),
    Field("head_dim", int, check=_pos, rule="a positive integer"),
    Field("attention_width", int, required=False, check=_pos, rule="a positive integer"),
    Field("ffn_size", int, check=_pos, rule="a positive integer"),
    Field("ffn_matrices", int, check=lambda x: x in (2, 3), rule="2 (up/down) or 3 (gate/up/down)"),
    Field("ffn_activation", str),
    Field("vocab_size", int, check=_pos, rule="a positive integer"),
    Field("tied_embeddings", bool),
    Field("learned_positions", int, required=False, check=_nonneg, rule=">= 0"),
    Field("norm", str, check=lambda x: x in set(Norm), rule=f"one of {', '.join(Norm)}"),
    Field("norms_per_layer", int, check=_pos, rule="a positive integer"),
    Field("embedding_norm", bool, required=False),
    Field("qkv_bias", bool),
    Field("linear_bias", bool),
    Field("parallel_block", bool, required=False),
    Field("dropout", bool),
    Field("default_seq_len", int, check=_pos, rule="a positive integer"),
    Field("max_seq_len", int, check=_pos, rule="a positive integer"),
    Field("moe", dict, required=False),
    Field("mla", dict, required=False),
    Field("qk_norm", bool, required=False),
    Field("published_params", int, check=_pos, rule="a positive integer"),
    Field("published_label", str),
    Field("source", str),
)

MOE_FIELDS = (
    Field("num_experts", int, check=_pos, rule="a positive integer"),
    Field("top_k", int, check=_pos, rule="a positive integer"),
    Field("shared_experts", int, check=_nonneg, rule=">= 0"),
    Field("expert_ffn_size", int, check=_pos, rule="a positive integer"),
    Field("dense_layers", int, check=_nonneg, rule=">= 0"),
    Field("router_bias", bool, required=False),
)

MLA_FIELDS = (
    Field("q_lora_rank", int, check=_nonneg, rule=">= 0 (0: no q latent)"),
    Field("kv_lora_rank", int, check=_pos, rule="a positive integer"),
    Field("qk_nope_head_dim", int, check=_pos, rule="a positive integer"),
    Field("qk_rope_head_dim", int, check=_pos, rule="a positive integer"),
    Field("v_head_dim", int, check=_pos, rule="a positive integer"),
)


def _validate(entry: Mapping[str, Any], fields: Sequence[Field], where: str) -> None:
    known = {f.name for f in fields}
    for key in entry:
        if key not in known:
            raise unknown_name(f"field in {where}", key, known)
    for f in fields:
        if f.name not in entry:
            if f.required:
                raise PlannerInputError(f"{where}: missing field '{f.name}'")
            continue
        value = entry[f.name]
        kinds = f.kind if isinstance(f.kind, tuple) else (f.kind,)
        type_ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not type_ok or (f.check is not None and not f.check(value)):
            expected = f.rule or "/".join(k.__name__ for k in kinds)
            raise PlannerInputError(f"{where}: field '{f.name}' must be {expected}, got {value!r}")


def _build_gpu(e: Mapping[str, Any], where: str) -> Gpu:
    _validate(e, GPU_FIELDS, where)
    price = None
    if "price" in e:
        p = e["price"]
        _validate(p, PRICE_FIELDS, f"{where} price")
        price = Price(float(p["usd_per_hour"]), p["provider"], p["offer"], p["date"], p["source"])
    for flag, rate in (("supports_bf16", "bf16_tflops"), ("supports_fp8", "fp8_tflops")):
        if e[flag] != (e[rate] > 0):
            raise PlannerInputError(f"{where}: '{flag}' is {e[flag]} but '{rate}' is {e[rate]}; give a rate exactly when supported")
    return Gpu(
        id=e["id"],
        name=e["name"],
        aliases=tuple(e.get("aliases", ())),
        vendor=e["vendor"],
        usable_memory_bytes=e["usable_memory_mib"] * MIB_BYTES,
        memory_label=e["memory_label"],
        memory_source=e["memory_source"],
        fp32_tflops=float(e["fp32_tflops"]),
        tf32_tflops=float(e["tf32_tflops"]),
        bf16_tflops=float(e["bf16_tflops"]),
        fp16_tflops=float(e["fp16_tflops"]),
        fp8_tflops=float(e["fp8_tflops"]),
        supports_bf16=e["supports_bf16"],
        supports_fp8=e["supports_fp8"],
        memory_bandwidth_gbps=float(e["memory_bandwidth_gbps"]),
        interconnect=e["interconnect"],
        interconnect_gbps=float(e["interconnect_gbps"]),
        gpus_per_node=e["gpus_per_node"],
        price=price,
        source=e["source"],
        network_gbps=float(e.get("network_gbps", DEFAULT_NETWORK_GBPS)),
        pcie_gbps=float(e.get("pcie_gbps", DEFAULT_PCIE_GBPS)),
        matmul_efficiency=float(e.get("matmul_efficiency", DEFAULT_MATMUL_EFFICIENCY)),
        fp8_matmul_efficiency=float(e.get("fp8_matmul_efficiency", 0.0)),
        perf_source=e.get("perf_source", "defaults: not calibrated for this GPU"),
    )


def _build_model(e: Mapping[str, Any], where: str) -> Model:
    _validate(e, MODEL_FIELDS, where)
    moe = None
    if "moe" in e:
        _validate(e["moe"], MOE_FIELDS, f"{where} moe")
        moe = Moe(**e["moe"])
    mla = None
    if "mla" in e:
        _validate(e["mla"], MLA_FIELDS, f"{where} mla")
        mla = Mla(**e["mla"])
    heads, kv = e["num_heads"], e["num_kv_heads"]
    if heads % kv:
        raise PlannerInputError(f"{where}: num_heads {heads} is not a multiple of num_kv_heads {kv}")
    model = Model(
        id=e["id"],
        name=e["name"],
        aliases=tuple(e.get("aliases", ())),
        family=e["family"],
        hidden_size=e["hidden_size"],
        num_layers=e["num_layers"],
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=e["head_dim"],
        attention_width=e.get("attention_width", heads * e["head_dim"]),
        ffn_size=e["ffn_size"],
        ffn_matrices=e["ffn_matrices"],
        ffn_activation=e["ffn_activation"],
        vocab_size=e["vocab_size"],
        tied_embeddings=e["tied_embeddings"],
        learned_positions=e.get("learned_positions", 0),
        norm=Norm(e["norm"]),
        norms_per_layer=e["norms_per_layer"],
        embedding_norm=e.get("embedding_norm", False),
        qkv_bias=e["qkv_bias"],
        linear_bias=e["linear_bias"],
        parallel_block=e.get("parallel_block", False),
        dropout=e["dropout"],
        default_seq_len=e["default_seq_len"],
        max_seq_len=e["max_seq_len"],
        moe=moe,
        mla=mla,
        qk_norm=e.get("qk_norm", False),
        published_params=e["published_params"],
        published_label=e["published_label"],
        source=e["source"],
    )
    param_counts(model)  # shapes must be computable
    return model


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise PlannerInputError(f"catalog file {path} not found; check the path given to --catalog") from None
    except tomllib.TOMLDecodeError as e:
        raise PlannerInputError(f"{path}: invalid TOML: {e}") from None
    unknown = set(data) - {"gpu", "model"}
    if unknown:
        raise PlannerInputError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}; a catalog holds [[gpu]] and [[model]] entries")
    return data


def _merge(base: dict[str, dict[str, Any]], entries: list[Any], path: Path, kind: str) -> None:
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("id"), str):
            raise PlannerInputError(f"{path}: {kind} entry #{i + 1} needs a string 'id'")
        key = normalize(e["id"])
        merged = {**base[key], **e} if key in base else dict(e)
        merged["_where"] = f"{path.name}: {kind} '{e['id']}'"
        base[key] = merged


def user_catalog_paths(extra: Sequence[str | Path] = ()) -> tuple[Path, ...]:
    env = [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return tuple(Path(p) for p in (*env, *extra))


def load_catalog(extra: Sequence[str | Path] = ()) -> Catalog:
    """The packaged catalogs, then $PLANNER_CATALOG files, then `extra` files."""
    return _load(user_catalog_paths(extra))


@cache
def _load(user_paths: tuple[Path, ...]) -> Catalog:
    root = packaged_catalog_dir()
    paths = (root / "gpus.toml", root / "models.toml", *user_paths)
    gpus: dict[str, dict[str, Any]] = {}
    models: dict[str, dict[str, Any]] = {}
    for path in paths:
        data = _read(path)
        _merge(gpus, data.get("gpu", []), path, "gpu")
        _merge(models, data.get("model", []), path, "model")

    def build(entries: dict[str, dict[str, Any]], fn: Callable[[Mapping[str, Any], str], Any]) -> tuple[Any, ...]:
        out = []
        for raw in entries.values():
            where = raw.pop("_where")
            out.append(fn(raw, where))
        return tuple(out)

    return Catalog(build(gpus, _build_gpu), build(models, _build_model), tuple(str(p) for p in paths))
