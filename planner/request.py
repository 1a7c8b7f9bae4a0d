"""User input (CLI strings or Python values) -> a validated Request.

Every knob option takes one value (pinned), a comma list or sequence
(restricted), `any` (everything the catalog knows) or None (the default
search). Errors say what is wrong and how to fix it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from typing import TypeVar

from planner.architecture import param_counts
from planner.batch import default_pretrain_batch
from planner.catalog import Catalog, load_catalog
from planner.errors import PlannerInputError, unknown_name
from planner.hf_cache import resolve_model_path
from planner.hf_config import read_config
from planner.profiles import DEFAULT_PROFILE, PROFILES, resolve_profile
from planner.specs import (
    DP_SHARD_WORDS,
    ZERO_STAGES,
    Accounting,
    AttentionKernel,
    Diversity,
    GpuStock,
    Job,
    KvFormat,
    LoraTargets,
    LossKernel,
    Margins,
    Mode,
    Model,
    Objective,
    Offload,
    Optimizer,
    Pins,
    Precision,
    Recompute,
    Request,
    WeightFormat,
    Workload,
)
from planner.units import parse_count, parse_duration, parse_usd

GIB_BYTES = 2**30
# The default profile's margins (planner.profiles: fitted on out-of-memory reports).
DEFAULT_OVERHEAD_GIB = PROFILES[DEFAULT_PROFILE].margins.overhead_bytes / GIB_BYTES
DEFAULT_FRAGMENTATION_PCT = PROFILES[DEFAULT_PROFILE].margins.fragmentation_pct
DEFAULT_TOP = 5
DEFAULT_LORA_RANK = 16
# Sequences per step when none is given: Llama 2-Chat's supervised fine-tuning (Touvron et al. 2023,
# Sec. 3.1: 64); QLoRA's Guanaco runs (Dettmers et al. 2023, App. B.2: 16). Pretraining: planner.batch.
DEFAULT_FINETUNE_GLOBAL_BATCH = {Mode.FINETUNE: 64, Mode.LORA: 16, Mode.QLORA: 16}
DEFAULT_TIME_LIMIT_S = 10.0
CHINCHILLA_TOKENS_PER_PARAM = 20  # compute-optimal pretraining (Hoffmann et al. 2022): the default token count
MAX_GPUS_PER_TYPE = 1_000_000
BUY_CAP_GPUS = 16_384  # procurement: the most GPUs of one type considered unless capped

E = TypeVar("E", bound=StrEnum)
Choice = str | int | Sequence[str | int] | None


def _items(value: Choice) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, int)):
        parts = [p.strip() for p in str(value).split(",")]
    else:
        parts = [str(v).strip() for v in value]
    if not parts or any(not p for p in parts):
        raise PlannerInputError(f"empty value in {value!r}; give a value, a comma list, or 'any'")
    return parts


def parse_enum_choice(option: str, value: Choice, enum: type[E]) -> tuple[E, ...] | None:
    items = _items(value)
    if not items:
        return None
    if [i.lower() for i in items] == ["any"]:
        return tuple(enum)
    out = []
    for item in items:
        key = item.lower().replace("_", "-")
        try:
            out.append(enum(key))
        except ValueError:
            raise unknown_name(f"{option} value", item, [*(e.value for e in enum), "any"]) from None
    return tuple(dict.fromkeys(out))


def parse_int_choice(option: str, value: Choice, allowed: Sequence[int] | None = None) -> tuple[int, ...] | None:
    items = _items(value)
    if not items or [i.lower() for i in items] == ["any"]:
        return tuple(allowed) if items and allowed is not None else None
    out = []
    for item in items:
        if not re.fullmatch(r"\d+", item) or int(item) < (0 if allowed is not None else 1):
            lowest = 0 if allowed is not None else 1
            raise PlannerInputError(f"{option} expects integers >= {lowest} (or a comma list, or 'any'), got '{item}'")
        n = int(item)
        if allowed is not None and n not in allowed:
            raise PlannerInputError(f"{option} {n} is not one of {', '.join(map(str, allowed))}")
        out.append(n)
    return tuple(sorted(set(out)))


def parse_dp_shard(value: Choice) -> tuple[int, ...] | None:
    """--dp-shard: 'all' (0: shard over all of DP), 'node' (the DP ranks of one node) or
    group sizes >= 2; a comma list restricts, 'any' (or nothing) searches all and node."""
    items = [i.lower() for i in _items(value)]
    if not items or items == ["any"]:
        return None
    out = set()
    for item in items:
        if item in DP_SHARD_WORDS:
            out.add(DP_SHARD_WORDS[item])
        elif re.fullmatch(r"\d+", item) and int(item) >= 2:
            out.add(int(item))
        else:
            raise PlannerInputError(f"--dp-shard expects 'all', 'node' or a shard-group size >= 2 (or a comma list), got '{item}'")
    return tuple(sorted(out))


def resolve_model(name: str, catalog: Catalog) -> Model:
    """A catalog name or alias first; else a config.json path, a directory holding one, or an
    org/name in the local Hugging Face cache (planner.hf_config)."""
    try:
        return catalog.model(name)
    except PlannerInputError:
        path = resolve_model_path(name)
        if path is None:
            if name.endswith(".json") or name.startswith((".", "/", "~")):
                raise PlannerInputError(f"no config.json at '{name}'; give an existing file or directory, or a catalog name") from None
            raise
        return read_config(path)


def parse_inventory(text: str | Sequence[GpuStock] | None, catalog: Catalog, buy: bool = False) -> tuple[GpuStock, ...]:
    """'a100-40g:8,h100:4' -> ((a100-40g, 8), (h100-80g, 4)). To buy: every priced catalog
    type up to BUY_CAP_GPUS each, or the types listed, each as TYPE, TYPE:N or TYPE:<=N (a cap)."""
    if text is not None and not isinstance(text, str):
        stocks = tuple(text)
        if not stocks:
            raise PlannerInputError("empty GPU inventory; give TYPE:COUNT, e.g. --gpus a100-40g:8")
        return stocks
    if not text and buy:
        stocks = tuple(GpuStock(g, BUY_CAP_GPUS) for g in catalog.gpus if g.price is not None)
        if not stocks:
            raise PlannerInputError("no GPU in the catalog has a price; add [gpu.price] entries with --catalog")
        return stocks
    if text is None:
        raise PlannerInputError("missing --gpus; give TYPE:COUNT, e.g. --gpus a100-40g:8, or --buy to choose from the catalog")
    stocks: list[GpuStock] = []
    for part in (p.strip() for p in text.split(",")):
        name, count = _purchase_entry(part) if buy else _owned_entry(part)
        gpu = catalog.gpu(name)
        if buy and gpu.price is None:
            raise PlannerInputError(f"{gpu.id} has no price to buy at; add [gpu.price] with --catalog or drop it")
        if any(s.gpu.id == gpu.id for s in stocks):
            raise PlannerInputError(f"{gpu.id} appears twice in the inventory; give each GPU type once with its total count")
        stocks.append(GpuStock(gpu, count))
    return tuple(stocks)


def _owned_entry(part: str) -> tuple[str, int]:
    m = re.fullmatch(r"([^:\s]+)\s*:\s*(\S+)", part)
    if not m:
        raise PlannerInputError(f"bad inventory entry '{part}'; expected TYPE:COUNT, e.g. a100-40g:8 (comma-separate several types)")
    name, count = m.groups()
    if not re.fullmatch(r"\d+", count) or not 1 <= int(count) <= MAX_GPUS_PER_TYPE:
        raise PlannerInputError(f"bad GPU count '{count}' in '{part}'; use a whole number from 1 to {MAX_GPUS_PER_TYPE}")
    return name, int(count)


def _purchase_entry(part: str) -> tuple[str, int]:
    m = re.fullmatch(r"([^:\s]+)\s*(?::\s*(?:<=)?\s*(\d+))?", part)
    if not m:
        raise PlannerInputError(f"bad entry '{part}' for --buy; expected TYPE, TYPE:N or TYPE:<=N (at most N), e.g. h100-80g:<=512")
    cap = int(m.group(2)) if m.group(2) else BUY_CAP_GPUS
    if not 1 <= cap <= MAX_GPUS_PER_TYPE:
        raise PlannerInputError(f"bad cap {cap} in '{part}'; use a whole number from 1 to {MAX_GPUS_PER_TYPE}")
    return m.group(1), cap


def _global_batch(value: int | str | None, seq_len: int) -> int | None:
    """Sequences per step: an integer, or tokens per step written '4M-tokens' (whole sequences, rounded down)."""
    if value is None or isinstance(value, int):
        return value
    text = value.strip().lower()
    for suffix in ("-tokens", "tokens", "-tok", "tok"):
        if text.endswith(suffix):
            tokens = parse_count("--global-batch", text.removesuffix(suffix))
            if tokens < seq_len:
                raise PlannerInputError(f"--global-batch {value} is less than one sequence of {seq_len} tokens")
            return tokens // seq_len
    if text.isdigit():
        return int(text)
    raise PlannerInputError(f"--global-batch takes sequences (1024) or tokens per step (4M-tokens), got '{value}'")


def _positive(option: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise PlannerInputError(f"{option} must be a positive integer, got {value!r}")
    return value


def build_request(
    model: str | Model,
    gpus: str | Sequence[GpuStock] | None,
    *,
    buy: bool = False,
    seq_len: int | None = None,
    global_batch: int | str | None = None,
    precision: Choice = None,
    optimizer: Choice = None,
    recompute: Choice = None,
    tp: Choice = None,
    dp: Choice = None,
    zero: Choice = None,
    micro_batch: Choice = None,
    pp: Choice = None,
    vpp: Choice = None,
    sp: bool | None = None,
    cp: Choice = None,
    offload: Choice = None,
    ep: Choice = None,
    dp_shard: Choice = None,
    mode: str = "pretrain",
    lora_rank: int = DEFAULT_LORA_RANK,
    lora_targets: str = "all",
    context: int | None = None,
    batch: int | None = None,
    weight_format: Choice = None,
    kv_dtype: Choice = None,
    objective: str | None = None,
    top: int = DEFAULT_TOP,
    diverse: str | None = None,
    accounting: str = "full",
    attention: str = "flash",
    loss: str | None = None,
    framework: str = DEFAULT_PROFILE,
    compile: bool = False,
    margin: str | None = None,
    overhead_gib: float | None = None,
    fragmentation_pct: float | None = None,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    tokens: str | int | None = None,
    budget: str | float | None = None,
    deadline: str | None = None,
    catalog: Catalog | None = None,
) -> Request:
    catalog = catalog or load_catalog()
    resolved = model if isinstance(model, Model) else resolve_model(model, catalog)
    inventory = parse_inventory(gpus, catalog, buy)
    default_objective = Objective.COST if buy else Objective.GPUS
    objective_ = (parse_enum_choice("--minimize", objective, Objective) or (default_objective,))[0]
    accounting_ = (parse_enum_choice("--accounting", accounting, Accounting) or (Accounting.FULL,))[0]
    attention_ = (parse_enum_choice("--attention", attention, AttentionKernel) or (AttentionKernel.FLASH,))[0]
    profile = resolve_profile(framework)
    if compile and not profile.can_compile:
        raise PlannerInputError(f"--compile applies to PyTorch-eager stacks; {profile.id} already runs fused kernels")
    loss_ = (parse_enum_choice("--loss", loss, LossKernel) or (profile.loss,))[0]
    mode_ = (parse_enum_choice("--mode", mode, Mode) or (Mode.PRETRAIN,))[0]
    targets = (parse_enum_choice("--lora-targets", lora_targets, LoraTargets) or (LoraTargets.ALL,))[0]
    if context is not None and seq_len is not None and context != seq_len:
        raise PlannerInputError(f"--context {context} and --seq-len {seq_len} disagree; give one (they are the same length)")
    if batch is not None:
        if mode_ is not Mode.INFER:
            raise PlannerInputError("--batch (concurrent sequences) applies to --mode infer; for training use --micro-batch and --global-batch")
        if micro_batch is not None:
            raise PlannerInputError("give --batch or --micro-batch, not both")
        micro_batch = _positive("--batch", batch)
    if mode_ is Mode.INFER and loss is not None:
        raise PlannerInputError("--loss applies to training; serving computes no loss")
    global_batch = _global_batch(global_batch, (context or seq_len) or resolved.default_seq_len)
    if mode_ is Mode.INFER and global_batch is not None:
        raise PlannerInputError("--global-batch applies to training; serving takes --batch (concurrent sequences)")
    if global_batch is None and mode_ is not Mode.INFER:
        global_batch = DEFAULT_FINETUNE_GLOBAL_BATCH.get(mode_)
    job = _job(resolved, mode_, objective_, tokens, budget, deadline)
    if global_batch is None and mode_ is Mode.PRETRAIN and (job is not None or accounting_ is Accounting.FULL):
        global_batch = default_pretrain_batch(param_counts(resolved).total, (context or seq_len) or resolved.default_seq_len)
    if objective is None and not buy and mode_ is not Mode.INFER and accounting_ is Accounting.FULL:
        objective_ = Objective.STEP_TIME  # GPUs one owns: the fastest plan on them (planner.candidates)
    if objective_ is Objective.COST:
        unpriced = [s.gpu.id for s in inventory if s.gpu.price is None]
        if unpriced:
            raise PlannerInputError(
                f"no price for {', '.join(unpriced)}; add [gpu.price] in a --catalog file or use --minimize gpus"
            )
    margins = _margins(profile.margins, margin, overhead_gib, fragmentation_pct)
    if not time_limit_s > 0:
        raise PlannerInputError(f"--time-limit must be > 0 seconds, got {time_limit_s}")
    seed = accounting_ is Accounting.SEED
    workload = Workload(
        seq_len=_positive("--context" if context is not None else "--seq-len", context or seq_len) or resolved.default_seq_len,
        global_batch=_positive("--global-batch", global_batch),
        accounting=accounting_,
        attention=attention_,
        framework=profile.layout,
        margins=Margins(0, 0.0) if seed else margins,
        mode=mode_,
        lora_rank=_positive("--lora-rank", lora_rank) or DEFAULT_LORA_RANK,
        lora_targets=targets,
        loss=loss_,
        compile=compile,
        profile=profile.id,
    )
    pins = Pins(
        precision=parse_enum_choice("--precision", precision, Precision),
        optimizer=parse_enum_choice("--optimizer", optimizer, Optimizer),
        recompute=parse_enum_choice("--recompute", recompute, Recompute),
        zero_stage=parse_int_choice("--zero", zero, ZERO_STAGES),
        tp=parse_int_choice("--tp", tp),
        dp=parse_int_choice("--dp", dp),
        micro_batch=parse_int_choice("--micro-batch", micro_batch),
        pp=parse_int_choice("--pp", pp),
        vpp=parse_int_choice("--vpp", vpp),
        sp=None if sp is None else (bool(sp),),
        cp=parse_int_choice("--cp", cp),
        offload=parse_enum_choice("--offload", offload, Offload),
        ep=parse_int_choice("--ep", ep),
        dp_shard=parse_dp_shard(dp_shard),
        weight_format=parse_enum_choice("--weight-format", weight_format, WeightFormat),
        kv_format=parse_enum_choice("--kv-dtype", kv_dtype, KvFormat),
    )
    return Request(
        model=resolved,
        inventory=inventory,
        workload=workload,
        pins=pins,
        objective=objective_,
        top=_positive("--top", top) or DEFAULT_TOP,
        diverse=parse_enum_choice("--diverse", diverse, Diversity) or ((Diversity.GPU,) if buy and len(inventory) > 1 else None),
        time_limit_s=float(time_limit_s),
        job=job,
        procurement=buy,
    )


_MARGIN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(%|gib|g)?\s*$", re.IGNORECASE)
MAX_OVERHEAD_GIB = 1024.0


def _margins(default: Margins, margin: str | None, overhead_gib: float | None, fragmentation_pct: float | None) -> Margins:
    """The per-GPU margins: the profile's fitted ones, or `--margin 2GiB|5%` (the whole margin as
    memory outside the allocator or as a share of the allocated peak), or the two parts given apart."""
    overhead, frag, single = default.overhead_bytes, default.fragmentation_pct, default.single_gpu_overhead_bytes
    if margin is not None:
        if overhead_gib is not None or fragmentation_pct is not None:
            raise PlannerInputError("give --margin, or --overhead-gib and --fragmentation-pct, not both")
        m = _MARGIN.match(str(margin))
        if m is None:
            raise PlannerInputError(f"--margin {margin!r} is not a margin; give GiB per GPU (2, 2GiB) or a share of the allocated peak (5%)")
        value = float(m.group(1))
        if m.group(2) == "%":
            overhead_gib, fragmentation_pct = 0.0, value
        else:
            overhead_gib, fragmentation_pct = value, 0.0
    if fragmentation_pct is not None:
        if not 0 <= fragmentation_pct <= 100:
            raise PlannerInputError(f"--fragmentation-pct must be within 0..100, got {fragmentation_pct}")
        frag = float(fragmentation_pct)
    if overhead_gib is not None:
        if not 0 <= overhead_gib <= MAX_OVERHEAD_GIB:
            raise PlannerInputError(f"--overhead-gib must be within 0..{MAX_OVERHEAD_GIB:g} GiB, got {overhead_gib}")
        overhead = single = round(overhead_gib * GIB_BYTES)
    return Margins(overhead_bytes=overhead, fragmentation_pct=frag, cached_pct=default.cached_pct,
                   single_gpu_overhead_bytes=single)


def _job(model: Model, mode: Mode, objective: Objective, tokens: str | int | None, budget: str | float | None,
         deadline: str | None) -> Job | None:
    """The whole run, when tokens, a budget, a deadline or the time objective ask for it."""
    if tokens is None and budget is None and deadline is None and objective is not Objective.TIME:
        return None
    if mode is Mode.INFER:
        raise PlannerInputError("--tokens, --budget, --deadline and --minimize time apply to training; serving ranks by $ per million tokens")
    if tokens is not None:
        count, source = parse_count("--tokens", tokens), "given"
    elif mode is Mode.PRETRAIN:
        count = CHINCHILLA_TOKENS_PER_PARAM * param_counts(model).total
        source = f"default: {CHINCHILLA_TOKENS_PER_PARAM} tokens per parameter (compute-optimal, Hoffmann et al. 2022); set --tokens"
    else:
        raise PlannerInputError(f"--mode {mode} needs --tokens (e.g. --tokens 100M) for time, cost of the run, a budget or a deadline")
    return Job(
        tokens=count,
        tokens_source=source,
        budget_usd=None if budget is None else parse_usd("--budget", budget),
        deadline_s=None if deadline is None else parse_duration("--deadline", deadline),
    )
