"""What real training and serving frameworks allow, and the pins that ask for something else.

The frameworks' rules (ZeRO stages, recomputation modes, offload and pipeline
support per framework; the TP degrees a model and a node allow; the formats a
GPU serves) and `check_pins`, which refuses a pin no GPU type of the inventory
can honour (a TP degree that does not divide the heads, pipeline stages under
DeepSpeed) with what to change. `planner.space` enumerates what they allow.
"""

from __future__ import annotations

from planner.errors import PlannerInputError
from planner.specs import (
    PRECISIONS,
    ZERO_STAGES,
    AttentionKernel,
    Framework,
    Gpu,
    KvFormat,
    Mode,
    Model,
    Offload,
    Recompute,
    Request,
    WeightFormat,
)

DEFAULT_MICRO_BATCHES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)  # the micro-batches a search tries unless pinned
PIPELINE_FRAMEWORKS = (Framework.MEGATRON, Framework.MEGATRON_DEEPSPEED, Framework.FSDP)  # HF+DeepSpeed has no pipeline
ZERO_BY_FRAMEWORK = {
    Framework.DEEPSPEED: ZERO_STAGES,
    Framework.FSDP: ZERO_STAGES,
    Framework.MEGATRON: (0, 1),
    Framework.MEGATRON_DEEPSPEED: ZERO_STAGES,  # ZeRO-2/3 only without pipeline stages
}
# HF models under DeepSpeed recompute whole layers (gradient checkpointing) or nothing.
RECOMPUTE_BY_FRAMEWORK = {fw: tuple(Recompute) for fw in Framework} | {Framework.DEEPSPEED: (Recompute.NONE, Recompute.FULL)}
OFFLOAD_STAGES = {  # the ZeRO stages each framework can offload from
    (Framework.DEEPSPEED, Offload.OPTIMIZER): (1, 2, 3),
    (Framework.DEEPSPEED, Offload.PARAMS): (3,),
    (Framework.FSDP, Offload.PARAMS): (3,),
    (Framework.MEGATRON, Offload.OPTIMIZER): (0, 1),
    (Framework.MEGATRON_DEEPSPEED, Offload.OPTIMIZER): (1, 2, 3),
    (Framework.MEGATRON_DEEPSPEED, Offload.PARAMS): (3,),
}


def tp_candidates(model: Model, gpu: Gpu, count: int) -> tuple[int, ...]:
    """TP degrees that split heads, KV heads and the FFN evenly and stay inside one node."""
    widths = [model.num_heads, model.num_kv_heads, model.ffn_size]
    if model.moe is not None:
        widths.append(model.moe.expert_ffn_size)
    limit = min(gpu.gpus_per_node, count)
    return tuple(t for t in range(1, limit + 1) if all(w % t == 0 for w in widths))



def _require(ok: bool, message: str) -> None:
    if not ok:
        raise PlannerInputError(message)


TRAINING_ONLY = ("precision", "optimizer", "recompute", "zero_stage", "vpp", "sp", "cp", "offload", "ep", "dp_shard")
SERVING_ONLY = ("weight_format", "kv_format")
FLAGS = {"zero_stage": "--zero", "weight_format": "--weight-format", "kv_format": "--kv-dtype", "micro_batch": "--micro-batch",
         "dp_shard": "--dp-shard"}


def _check_mode_pins(request: Request) -> None:
    pins, mode = request.pins, request.workload.mode
    wrong = SERVING_ONLY if mode is not Mode.INFER else TRAINING_ONLY
    for field in wrong:
        if getattr(pins, field) is not None:
            flag = FLAGS.get(field, f"--{field.replace('_', '-')}")
            other = "--mode infer" if field in SERVING_ONLY else "a training mode (pretrain, finetune, lora, qlora)"
            raise PlannerInputError(f"{flag} has no meaning with --mode {mode}; it applies to {other}")
    if mode is Mode.INFER:
        for flag, formats in (("--weight-format", pins.weight_format), ("--kv-dtype", pins.kv_format)):
            usable = [f for f in formats or () if any(serving_supports(s.gpu, f) for s in request.inventory)]
            _require(formats is None or bool(usable), f"{flag} {','.join(formats or ())} is not supported by "
                                                      f"{', '.join(s.gpu.id for s in request.inventory)}; pick another or a GPU with it")


def check_pins(request: Request) -> None:
    """Raise for pins no GPU type in the inventory can honour."""
    _check_mode_pins(request)
    pins, model, inv, w = request.pins, request.model, request.inventory, request.workload
    fw = w.framework
    if pins.precision is not None:
        _require(
            any(s.gpu.supports(p) for p in pins.precision for s in inv),
            f"--precision {','.join(pins.precision)} is not supported by {', '.join(s.gpu.id for s in inv)}; pick one of "
            f"{', '.join(x for x in PRECISIONS if any(s.gpu.supports(x) for s in inv))}",
        )
    if pins.tp is not None:
        valid = sorted({t for s in inv for t in tp_candidates(model, s.gpu, s.count)})
        bad = [t for t in pins.tp if t not in valid]
        _require(
            not bad,
            f"--tp {bad[0] if bad else ''} is impossible for {model.id} on this inventory: TP must divide "
            f"{model.num_heads} heads, {model.num_kv_heads} KV heads and FFN {model.ffn_size}, and fit in one node "
            f"and the GPU count; valid: {', '.join(map(str, valid)) or 'none'}",
        )
    if pins.zero_stage is not None:
        bad = [z for z in pins.zero_stage if z not in ZERO_BY_FRAMEWORK[fw]]
        _require(not bad, f"--zero {bad[0] if bad else ''} is not available with --framework {fw}; "
                          f"use {', '.join(map(str, ZERO_BY_FRAMEWORK[fw]))} (Megatron shards the optimizer only, as ZeRO-1)")
    if pins.pp is not None and pins.pp != (1,):
        _require(fw in PIPELINE_FRAMEWORKS or w.mode is Mode.INFER, f"--pp needs --framework megatron, megatron-deepspeed or fsdp; {fw} plans run without pipeline stages")
        bad = [p for p in pins.pp if p > model.num_layers]
        _require(not bad, f"--pp {bad[0] if bad else ''} exceeds {model.id}'s {model.num_layers} layers")
    if pins.vpp is not None and pins.vpp != (1,):
        _require(fw is not Framework.DEEPSPEED, "--vpp (interleaved 1F1B) needs pipeline stages: --framework megatron, megatron-deepspeed or fsdp")
    if pins.recompute is not None:
        _require(any(r in RECOMPUTE_BY_FRAMEWORK[fw] for r in pins.recompute),
                 f"--recompute {','.join(pins.recompute)} is not available with --framework {fw} (HF models recompute "
                 "whole layers); use none or full, or --framework megatron/fsdp")
    if pins.sp is not None and True in pins.sp:
        _require(fw in PIPELINE_FRAMEWORKS, f"--sp needs --framework megatron, megatron-deepspeed or fsdp; {fw} has no sequence parallelism")
    if pins.cp is not None and pins.cp != (1,):
        _require(fw in (Framework.MEGATRON, Framework.FSDP), f"--cp needs --framework megatron or fsdp; {fw} has no context parallelism")
        _require(w.attention is AttentionKernel.FLASH, "--cp needs flash attention (ring attention); drop --attention eager")
        bad = [c for c in pins.cp if w.seq_len % c]
        _require(not bad, f"--cp {bad[0] if bad else ''} does not divide --seq-len {w.seq_len}")
    if pins.ep is not None and pins.ep != (1,):
        _require(model.moe is not None, f"--ep (expert parallelism) needs a mixture-of-experts model; {model.id} is dense")
        bad = [e for e in pins.ep if model.moe is not None and model.moe.num_experts % e]
        _require(not bad, f"--ep {bad[0] if bad else ''} does not divide {model.id}'s {model.moe.num_experts if model.moe else 0} experts")
    if pins.dp_shard is not None and pins.dp_shard != (0,):
        _require(fw is Framework.FSDP, f"--dp-shard (hybrid sharding, HSDP) needs --framework fsdp; {fw} shards over all of DP")
        _require(pins.zero_stage is None or any(z >= 2 for z in pins.zero_stage),
                 "--dp-shard (hybrid sharding) shards gradients or parameters: use --zero 2 or 3 (HYBRID_SHARD is ZeRO-3)")
        if pins.dp is not None:
            groups = [g for g in pins.dp_shard if g > 0]
            _require(not groups or any(d % g == 0 and d > g for d in pins.dp for g in groups),
                     f"--dp-shard {groups[0] if groups else ''} must divide --dp {pins.dp[0]} with at least two replicas; "
                     f"pick a divisor of DP below it")
    if pins.offload is not None:
        _require(w.mode.adapters or pins.offload != (Offload.PAGED,),
                 "--offload paged (bitsandbytes' paged optimizer) is modelled for --mode lora or qlora; for full training use --offload optimizer")
        usable = [o for o in pins.offload if o in (Offload.NONE, Offload.PAGED) or (fw, o) in OFFLOAD_STAGES]
        _require(bool(usable), f"--offload {','.join(pins.offload)} is not available with --framework {fw}; "
                               + ", ".join(f"{f} offloads {o}" for f, o in OFFLOAD_STAGES))
    gb = w.global_batch
    if gb is not None and pins.micro_batch is not None:
        bad = [m for m in pins.micro_batch if gb % m]
        _require(not bad, f"--micro-batch {bad[0] if bad else ''} does not divide --global-batch {gb}; pick a divisor of {gb}")
    if pins.dp is not None:
        smallest = min(pins.tp or (1,)) * min(pins.pp or (1,)) * min(pins.cp or (1,))
        most = max(s.count for s in inv)
        bad = [d for d in pins.dp if d * smallest > most]
        _require(not bad, f"--dp {bad[0] if bad else ''} needs {bad[0] * smallest if bad else ''} GPUs with the model-parallel pins but "
                          f"the inventory has at most {most} of one type; lower --dp or add GPUs")
        if gb is not None:
            mbs = pins.micro_batch or DEFAULT_MICRO_BATCHES
            _require(any(gb % (m * d) == 0 for m in mbs for d in pins.dp),
                     f"--global-batch {gb} is not divisible by micro-batch x DP for any allowed pair; "
                     f"choose DP and micro-batch whose product divides {gb}")
    seq = w.seq_len
    _require(not (model.learned_positions and seq > model.learned_positions),
             f"--seq-len {seq} exceeds {model.id}'s learned position table of {model.learned_positions}; use --seq-len <= {model.learned_positions}")


def serving_supports(gpu: Gpu, fmt: WeightFormat | KvFormat) -> bool:
    if fmt in (WeightFormat.BF16, KvFormat.BF16):
        return gpu.supports_bf16
    if fmt in (WeightFormat.FP8, KvFormat.FP8):
        return gpu.supports_fp8
    return True
