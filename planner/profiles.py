"""Training-stack profiles: how a real stack lays out memory, one table.

`--framework` names a profile. Each maps to a state layout and kernel set
(`Framework`: DeepSpeed ZeRO, PyTorch DDP/FSDP with autocast, Megatron with
Transformer Engine, Megatron-DeepSpeed), its cross-entropy implementation,
whether torch.compile is an option, and its memory margins. The step-time
model reads the profile id for its efficiency (`planner.steptime`).

Margins are fitted in `validation/allocator_fit.py` on real PyTorch
out-of-memory reports (validation/allocator.toml): the slack the caching
allocator could not hand out at the moment it gave up, as a share of the
allocated bytes, and the process memory outside PyTorch's allocator. The
constants below state the figures and their spread.

torch.compile (`--compile`) changes what the blocks save, not the loss:
torchtitan compiles each transformer block apart (apply_compile), not the
output layer or the loss, and its compiled 8B runs measured 77.0 GiB against
82.4 eager, a saving the blocks alone explain (validation/published.toml,
titan-llama3.1-8b-fsdp8*).
"""

from __future__ import annotations

from planner.errors import PlannerInputError
from planner.specs import Framework, LossKernel, Margins, Profile

GIB = 2**30

# Fitted on 60 PyTorch out-of-memory reports from 40 repositories (validation/allocator.toml,
# validation/allocator_fit.py): memory outside PyTorch's allocator, median 0.96 GiB (upper quartile
# 1.49) in multi-GPU runs and 0.31 (upper quartile 0.50) on one GPU; the slack the allocator could
# not hand out when it gave up, median 1.7 % of the allocated bytes (upper quartile 6.1 %, 90th
# percentile 24 %). The margins sit between median and upper quartile: the tensor-level model is
# itself on the high side (validation/report.py), and a margin at the 90th percentile would reject
# published runs that ran.
DISTRIBUTED_OVERHEAD_BYTES = round(1.0 * GIB)
SINGLE_GPU_OVERHEAD_BYTES = round(0.5 * GIB)
FRAGMENTATION_PCT = 3.0  # default caching allocator
EXPANDABLE_FRAGMENTATION_PCT = 3.0  # expandable segments: one report only (5.2 %), so no lower figure is claimed
# The cache the allocator holds beyond that at a training peak while memory is plentiful (reported
# as peak reserved, never charged against capacity): together with the fragmentation, the 10 %
# reserved-over-allocated the measured nvidia-smi and reserved figures of validation/published.toml
# were matched with; expandable segments map memory as needed and keep little.
CACHED_PCT = 7.0
EXPANDABLE_CACHED_PCT = 1.0

_DEFAULT = Margins(DISTRIBUTED_OVERHEAD_BYTES, FRAGMENTATION_PCT, CACHED_PCT, SINGLE_GPU_OVERHEAD_BYTES)
_EXPANDABLE = Margins(DISTRIBUTED_OVERHEAD_BYTES, EXPANDABLE_FRAGMENTATION_PCT, EXPANDABLE_CACHED_PCT,
                      SINGLE_GPU_OVERHEAD_BYTES)

_MEGATRON_SOURCE = (
    "Megatron-LM megatron/core/tensor_parallel/cross_entropy.py (softmax computed in place in the fp32 copy of "
    "the vocab-parallel logits, saved for backward; the gradient written into it); Korthikanti et al. 2022 "
    "(fused kernels, Table 2)"
)
_HF_SOURCE = (
    "transformers loss_utils.ForCausalLMLoss (logits.float(), then F.cross_entropy: fp32 log-probabilities "
    "saved, fp32 gradients in backward); bench/saved_tensors.py for the block's saved tensors"
)

PROFILES: dict[str, Profile] = {
    p.id: p
    for p in (
        Profile("megatron", "Megatron-LM (Megatron-Core, Transformer Engine)", Framework.MEGATRON, LossKernel.FUSED,
                False, _DEFAULT, _MEGATRON_SOURCE),
        Profile("nemo", "NeMo / Megatron-Bridge (Megatron-Core, Transformer Engine)", Framework.MEGATRON,
                LossKernel.FUSED, False, _DEFAULT,
                _MEGATRON_SOURCE + "; NeMo trains through Megatron-Core, whose DistributedDataParallelConfig "
                "reduces gradients in the parameter dtype unless grad_reduce_in_fp32 is set (Megatron-LM's "
                "arguments force fp32 for bf16); NVIDIA's published NeMo/Megatron-Bridge layouts for Llama 3 8B-405B "
                "on H100 fit only with 16-bit gradient buffers (validation/published.toml, nemo2407-*, mbridge*)",
                fp32_main_grads=False),
        Profile("megatron-deepspeed", "Megatron-DeepSpeed (Megatron kernels, DeepSpeed ZeRO)",
                Framework.MEGATRON_DEEPSPEED, LossKernel.FUSED, False, _DEFAULT,
                _MEGATRON_SOURCE + "; BigScience Megatron-DeepSpeed keeps Megatron's vocab-parallel cross-entropy"),
        Profile("deepspeed", "Hugging Face model under DeepSpeed ZeRO", Framework.DEEPSPEED, LossKernel.FULL,
                True, _DEFAULT, _HF_SOURCE),
        Profile("hf", "Hugging Face Trainer / accelerate (DDP or FSDP, autocast)", Framework.FSDP, LossKernel.FULL,
                True, _DEFAULT, _HF_SOURCE),
        Profile("fsdp", "PyTorch DDP/FSDP with autocast, eager", Framework.FSDP, LossKernel.FULL, True, _DEFAULT,
                _HF_SOURCE),
        Profile("torchtitan", "torchtitan (FSDP2, per-block wrapping)", Framework.FSDP, LossKernel.FULL, True,
                _EXPANDABLE,
                "torchtitan train.py (cross_entropy on pred.float(); pred deleted before backward), "
                "parallelize apply_compile (each block compiled apart), run_train.sh (PYTORCH_CUDA_ALLOC_CONF="
                "expandable_segments:True)"),
        Profile("llm-foundry", "MosaicML llm-foundry / Composer (FSDP, flash-attn cross-entropy)", Framework.FSDP,
                LossKernel.FUSED, True, _DEFAULT,
                "llm-foundry models/mpt (flash_attn.losses.cross_entropy.CrossEntropyLoss: 16-bit logits and a "
                "log-sum-exp kept, no fp32 copy)"),
        Profile("torchtune", "torchtune (FSDP2, chunked cross-entropy)", Framework.FSDP, LossKernel.CHUNKED, True,
                _DEFAULT, "torchtune modules/loss CEWithChunkedOutputLoss (8 chunks, each upcast to fp32 alone)"),
    )
}

DEFAULT_PROFILE = "deepspeed"
# Words people use for the same stacks.
ALIASES = {
    "megatron-lm": "megatron", "megatron-core": "megatron", "megatron-bridge": "nemo", "transformers": "hf",
    "hf-trainer": "hf", "accelerate": "hf", "trainer": "hf", "foundry": "llm-foundry", "composer": "llm-foundry",
    "mosaicml": "llm-foundry", "titan": "torchtitan", "pytorch": "fsdp", "ddp": "fsdp",
}


def resolve_profile(name: str) -> Profile:
    """The profile a --framework word names; a one-line input error listing the choices otherwise."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in PROFILES:
        raise PlannerInputError(
            f"--framework {name!r} is not a known training stack; choose one of {', '.join(PROFILES)}"
        )
    return PROFILES[key]


def profile_of(workload_profile: str, layout: Framework) -> Profile:
    """The workload's profile by id, or the generic profile of its layout when none is named."""
    if workload_profile:
        return PROFILES[workload_profile]
    generic = {Framework.MEGATRON: "megatron", Framework.MEGATRON_DEEPSPEED: "megatron-deepspeed",
               Framework.DEEPSPEED: "deepspeed", Framework.FSDP: "fsdp"}
    return PROFILES[generic[layout]]
