"""Frozen specifications: the vocabulary every other module speaks.

Specs are complete when built (the catalog loader and the request parser fill
every field), quantities carry their unit in the name, and bytes are ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class Precision(StrEnum):
    """Training numerics: where weights, gradients and optimizer states live."""

    FP32 = "fp32"
    FP16 = "fp16"  # pure fp16: no fp32 master copy
    BF16 = "bf16"  # pure bf16: no fp32 master copy
    FP16_MIXED = "fp16-mixed"
    BF16_MIXED = "bf16-mixed"
    FP8_MIXED = "fp8-mixed"


class Optimizer(StrEnum):
    ADAMW = "adamw"
    ADAMW_8BIT = "adamw-8bit"
    SGD_MOMENTUM = "sgd-momentum"
    SGD = "sgd"
    ADAFACTOR = "adafactor"
    LION = "lion"


class Recompute(StrEnum):
    """Activation recomputation (Korthikanti et al. 2022): none, selective
    (core attention only), full (only each layer's input is kept)."""

    NONE = "none"
    SELECTIVE = "selective"
    FULL = "full"


class Accounting(StrEnum):
    """FULL is the planner's model; SEED reproduces the seed documents'
    accounting exactly (states + the Korthikanti activation formula, nothing else)."""

    FULL = "full"
    SEED = "seed"


class AttentionKernel(StrEnum):
    """FLASH: fused kernel (FlashAttention/SDPA) that keeps no s x s scores.
    EAGER: explicit softmax(QK^T)V that keeps the scores for backward."""

    FLASH = "flash"
    EAGER = "eager"


class LossKernel(StrEnum):
    """How cross-entropy meets the logits (bytes per logit in `activations.logits_bytes`).

    FULL: eager PyTorch on the whole micro-batch's logits upcast to fp32 (HF
    `ForCausalLMLoss`, torchtitan without compile). FUSED: one fp32 tensor
    at most (Megatron's vocab-parallel cross-entropy computes the softmax in
    place in its fp32 copy; flash-attn's and torch.compile'd cross-entropy
    keep the 16-bit logits and a log-sum-exp). CHUNKED: the LM head and loss
    run over LOSS_CHUNKS slices of the tokens, so only one slice is in fp32
    at a time (torchtune's CEWithChunkedOutputLoss, 8 chunks). FUSED_LINEAR:
    the LM head and loss fused over token chunks, the logits never whole
    (Liger's FusedLinearCrossEntropy, Apple's Cut Cross-Entropy)."""

    FULL = "full"
    FUSED = "fused"
    CHUNKED = "chunked"
    FUSED_LINEAR = "fused-linear"


LOSS_CHUNKS = 8  # torchtune CEWithChunkedOutputLoss(num_output_chunks=8)


class Framework(StrEnum):
    """The training stack: it decides what autograd saves and how model states are laid out.

    DEEPSPEED: a Hugging Face/PyTorch eager model (RMSNorm upcast to fp32 in
    Python, fp32 softmax, unfused activations, loss on fp32 logits) under
    DeepSpeed ZeRO (16-bit weights; fp32 master weights, optimizer states and
    gradient partitions). FSDP: the same eager model under PyTorch DDP/FSDP
    with autocast (fp32 parameters and gradients, 16-bit compute copies), as
    HF Trainer, torchtitan and torchtune run it. MEGATRON: Megatron-LM with
    Transformer Engine fused kernels (the setting of Korthikanti et al.
    2022), an fp32 main-gradient buffer and the distributed optimizer.
    MEGATRON_DEEPSPEED: Megatron's fused kernels and parallelism with
    DeepSpeed's ZeRO optimizer holding the states (BLOOM's stack).
    """

    DEEPSPEED = "deepspeed"
    FSDP = "fsdp"
    MEGATRON = "megatron"
    MEGATRON_DEEPSPEED = "megatron-deepspeed"

    @property
    def fused_kernels(self) -> bool:
        return self in (Framework.MEGATRON, Framework.MEGATRON_DEEPSPEED)

    @property
    def zero_states(self) -> bool:
        """Model states laid out by DeepSpeed ZeRO."""
        return self in (Framework.DEEPSPEED, Framework.MEGATRON_DEEPSPEED)


class Offload(StrEnum):
    """What lives in CPU memory: nothing, the optimizer (states, master weights,
    fp32 gradient partitions and the optimizer step), or also the parameters;
    `paged`: bitsandbytes' paged optimizer (QLoRA, Dettmers et al. 2023 Sec. 3),
    whose states sit in CUDA unified memory that pages to the CPU under memory
    pressure and back for the step, run on the GPU once activations are freed."""

    NONE = "none"
    OPTIMIZER = "optimizer"
    PARAMS = "params"
    PAGED = "paged"


class Mode(StrEnum):
    """What the GPUs do: train every weight (pretrain, finetune), train low-rank
    adapters on a frozen base (lora) or on a 4-bit NF4 base (qlora), or serve (infer)."""

    PRETRAIN = "pretrain"
    FINETUNE = "finetune"
    LORA = "lora"
    QLORA = "qlora"
    INFER = "infer"

    @property
    def adapters(self) -> bool:
        return self in (Mode.LORA, Mode.QLORA)


class LoraTargets(StrEnum):
    """Which linear layers get adapters: attention projections, MLP (and expert) projections, or both."""

    ATTN = "attn"
    MLP = "mlp"
    ALL = "all"


class WeightFormat(StrEnum):
    """How served weights are stored. int8/int4 as GPTQ/AWQ-style integer weights with fp16 group
    scales. The bitsandbytes formats: nf4/fp4 4-bit blockwise with an fp32 absmax per 64 weights,
    -dq with that absmax double-quantized (QLoRA, Dettmers et al. 2023); llm-int8 int8 weights with
    an fp32 scale per output row (LLM.int8(), Dettmers et al. 2022). Bytes in `planner.serving`."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"
    NF4 = "nf4"
    NF4_DQ = "nf4-dq"
    FP4 = "fp4"
    FP4_DQ = "fp4-dq"
    LLM_INT8 = "llm-int8"


class KvFormat(StrEnum):
    """KV-cache element type."""

    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"


class Objective(StrEnum):
    """What the plans are ranked by: GPU count; cost (of the whole job when a
    token count is given, else per hour); time to train the job's tokens;
    step time (the fastest plan on the inventory, reference numerics first:
    the default for GPUs one owns)."""

    GPUS = "gpus"
    COST = "cost"
    TIME = "time"
    STEP_TIME = "step-time"


class Norm(StrEnum):
    LAYERNORM = "layernorm"  # weight and bias
    RMSNORM = "rmsnorm"  # weight only


# Fixed orders: knob arrays store an enum as its index in these tuples.
PRECISIONS: tuple[Precision, ...] = tuple(Precision)
OPTIMIZERS: tuple[Optimizer, ...] = tuple(Optimizer)
RECOMPUTES: tuple[Recompute, ...] = tuple(Recompute)
OFFLOADS: tuple[Offload, ...] = tuple(Offload)
WEIGHT_FORMATS: tuple[WeightFormat, ...] = tuple(WeightFormat)
KV_FORMATS: tuple[KvFormat, ...] = tuple(KvFormat)
ZERO_STAGES: tuple[int, ...] = (0, 1, 2, 3)
DP_SHARD_NODE = -1  # a --dp-shard pin meaning "the DP ranks of one node", resolved per GPU type
DP_SHARD_WORDS = {"all": 0, "node": DP_SHARD_NODE}  # the words --dp-shard takes besides a group size


class Diversity(StrEnum):
    """A knob whose values the top-K plans must all differ in (best plan per value)."""

    GPU = "gpu"
    PRECISION = "precision"
    OPTIMIZER = "optimizer"
    RECOMPUTE = "recompute"
    ZERO = "zero"
    TP = "tp"
    PP = "pp"
    CP = "cp"
    OFFLOAD = "offload"
    MICRO_BATCH = "micro-batch"

    @property
    def column(self) -> str:
        """The KnobArrays field holding this knob."""
        return {"zero": "zero_stage", "micro-batch": "micro_batch"}.get(self.value, self.value)


@dataclass(frozen=True, slots=True)
class Price:
    usd_per_hour: float  # on-demand, per GPU
    provider: str
    offer: str
    date: date
    source: str


DEFAULT_NETWORK_GBPS = 12.5  # 100 Gb/s per GPU: a modest cloud network
DEFAULT_PCIE_GBPS = 32.0  # PCIe Gen4 x16, one direction
DEFAULT_MATMUL_EFFICIENCY = 0.4  # below every calibrated GPU type (bench/results/throughput_calibration.csv)


@dataclass(frozen=True, slots=True)
class Gpu:
    id: str
    name: str
    aliases: tuple[str, ...]
    vendor: str
    usable_memory_bytes: int  # what CUDA reports as total (torch total_memory), not the label
    memory_label: str  # the vendor's printed capacity, e.g. "80 GB"
    memory_source: str
    fp32_tflops: float  # dense peak, non-tensor
    tf32_tflops: float  # dense peak tensor-core rate; 0.0 where unsupported
    bf16_tflops: float  # dense peak, fp32 accumulate; 0.0 where unsupported
    fp16_tflops: float
    fp8_tflops: float  # 0.0 where unsupported
    supports_bf16: bool
    supports_fp8: bool
    memory_bandwidth_gbps: float  # GB/s, decimal
    interconnect: str
    interconnect_gbps: float  # GPU-to-GPU per GPU, both directions, GB/s decimal
    gpus_per_node: int
    price: Price | None  # None: no sourced on-demand price (cost objective refuses it)
    source: str
    # performance (planner.steptime); defaults for user-added GPUs that do not give them
    network_gbps: float = DEFAULT_NETWORK_GBPS  # inter-node, per GPU, one direction, GB/s decimal
    pcie_gbps: float = DEFAULT_PCIE_GBPS  # host link, one direction, GB/s decimal
    matmul_efficiency: float = DEFAULT_MATMUL_EFFICIENCY  # achieved share of the 16-bit dense peak in training
    fp8_matmul_efficiency: float = 0.0  # the same for fp8 GEMMs; 0: use matmul_efficiency
    perf_source: str = "defaults: not calibrated for this GPU"

    def supports(self, precision: Precision) -> bool:
        if precision in (Precision.BF16, Precision.BF16_MIXED):
            return self.supports_bf16
        if precision is Precision.FP8_MIXED:
            return self.supports_fp8
        return True


@dataclass(frozen=True, slots=True)
class Moe:
    num_experts: int  # routed experts per MoE layer
    top_k: int  # routed experts per token
    shared_experts: int
    expert_ffn_size: int
    dense_layers: int  # leading layers with a dense FFN of the model's ffn_size
    router_bias: bool = False  # a per-expert routing bias (DeepSeek-V3's e_score_correction_bias)


@dataclass(frozen=True, slots=True)
class Mla:
    """Multi-head latent attention (DeepSeek-V2, DeepSeek-AI 2024, Sec. 2.1.1; used by
    DeepSeek-V3): q goes through a low-rank latent (q_lora_rank; 0 projects it
    directly), k and v share one latent of kv_lora_rank plus a decoupled RoPE key of
    qk_rope_head_dim shared by all heads. Per head, q and k have qk_nope + qk_rope
    dimensions and v has v_head_dim. Serving caches the latent and the RoPE key."""

    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


@dataclass(frozen=True, slots=True)
class Model:
    id: str
    name: str
    aliases: tuple[str, ...]
    family: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    attention_width: int  # width of the q and o projections (heads x head_dim unless the source says otherwise)
    ffn_size: int
    ffn_matrices: int  # 2: up/down (GELU, ReLU); 3: gate/up/down (SwiGLU, GeGLU)
    ffn_activation: str
    vocab_size: int
    tied_embeddings: bool
    learned_positions: int  # rows of a learned absolute position table; 0 for RoPE/ALiBi
    norm: Norm
    norms_per_layer: int
    embedding_norm: bool  # a norm right after the token embedding (BLOOM)
    qkv_bias: bool
    linear_bias: bool  # biases on the attention output and FFN projections
    parallel_block: bool  # attention and FFN read the same input (Falcon, GPT-J)
    dropout: bool  # dropout layers active in training (GPT-2/3, OPT)
    default_seq_len: int
    max_seq_len: int
    moe: Moe | None
    published_params: int  # exact published (or source-computed) parameter count
    published_label: str  # as the source prints it, e.g. "13B"
    source: str
    mla: Mla | None = None  # multi-head latent attention; head_dim is then the q/k head, attention_width heads x v_head_dim
    qk_norm: bool = False  # an RMSNorm over each head of q and of k (Qwen3, OLMo-2 style), before RoPE

    @property
    def kv_width(self) -> int:
        """Width of the k and v projections (grouped-query aware)."""
        return self.attention_width * self.num_kv_heads // self.num_heads


@dataclass(frozen=True, slots=True)
class GpuStock:
    gpu: Gpu
    count: int


@dataclass(frozen=True, slots=True)
class Margins:
    """What the plan keeps free beyond the tensors it counts.

    overhead_bytes: memory outside PyTorch's allocator on every GPU (CUDA
    context and kernels, cuBLAS workspaces, NCCL communicator buffers).
    fragmentation_pct: the caching allocator's reserved-but-unallocated slack
    that it cannot hand out, as a percentage of the allocated peak (what an
    out-of-memory report shows as "reserved by PyTorch but unallocated"
    after the allocator has released its cached blocks and retried).
    cached_pct: the further cache the allocator typically holds at the peak
    while memory is plentiful (max_memory_reserved beyond allocated and
    fragmentation); reported, never charged against capacity.
    """

    overhead_bytes: int
    fragmentation_pct: float
    cached_pct: float = 0.0
    single_gpu_overhead_bytes: int | None = None  # a one-GPU job (no NCCL communicators); None: overhead_bytes


@dataclass(frozen=True, slots=True)
class Profile:
    """A training stack as it lays out memory and time (`planner.profiles` holds the table).

    layout: how it holds model states and which kernels it runs (`Framework`);
    loss: its cross-entropy implementation; can_compile: whether
    torch.compile is an option there at all; margins: its allocator slack and the memory
    outside the allocator (fitted, see `planner.profiles`); fp32_main_grads:
    whether a Megatron-layout stack keeps an fp32 main-gradient buffer."""

    id: str
    name: str
    layout: Framework
    loss: LossKernel
    can_compile: bool
    margins: Margins
    source: str
    fp32_main_grads: bool = True  # Megatron layout: gradients accumulated and reduced in fp32 (else in the 16-bit param dtype)


@dataclass(frozen=True, slots=True)
class Workload:
    seq_len: int  # tokens per sequence (serving: prompt + generated tokens, the context)
    global_batch: int | None  # sequences per optimizer step; None: not constrained
    accounting: Accounting
    attention: AttentionKernel
    framework: Framework
    margins: Margins
    mode: Mode = Mode.PRETRAIN
    lora_rank: int = 16  # adapter rank (lora, qlora)
    lora_targets: LoraTargets = LoraTargets.ALL
    loss: LossKernel = LossKernel.FULL
    compile: bool = False  # torch.compile over each block (fuses norms and activations, keeps fewer tensors)
    profile: str = ""  # the training stack's profile id (planner.profiles); "" = the layout's generic profile

    @property
    def fused_kernels(self) -> bool:
        """Whether norms and activation functions run as fused kernels that save
        only their inputs: Megatron/TE always, an eager PyTorch model under torch.compile."""
        return self.framework.fused_kernels or self.compile


@dataclass(frozen=True, slots=True)
class Knobs:
    """One complete training configuration on one GPU type."""

    gpu: str  # Gpu.id
    precision: Precision
    optimizer: Optimizer
    recompute: Recompute
    zero_stage: int  # ZeRO stage; FSDP full shard = 3, shard-grad-op = 2; Megatron distributed optimizer = 1
    tp: int
    dp: int
    micro_batch: int
    pp: int = 1  # pipeline stages (1F1B schedule)
    vpp: int = 1  # virtual stages per pipeline rank (interleaved 1F1B when > 1)
    sp: bool = False  # Megatron sequence parallelism (needs tp > 1)
    cp: int = 1  # context parallelism: the sequence split over cp ranks
    offload: Offload = Offload.NONE
    ep: int = 1  # expert parallelism: routed experts split over ep of the DP ranks (MoE)
    dp_shard: int = 0  # FSDP hybrid sharding (HSDP): DP ranks sharding within a replica; 0 = all of DP
    weight_format: WeightFormat = WeightFormat.BF16  # serving: how weights are stored
    kv_format: KvFormat = KvFormat.BF16  # serving: KV-cache element type

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.cp * self.dp

    @property
    def layout(self) -> str:
        """The parallel layout in short: 'TP4+SP PP8x2 CP2 DP16' (degrees of 1 left out, DP always shown)."""
        parts = []
        if self.tp > 1:
            parts.append(f"TP{self.tp}" + ("+SP" if self.sp else ""))
        if self.pp > 1:
            parts.append(f"PP{self.pp}" + (f"x{self.vpp}" if self.vpp > 1 else ""))
        if self.cp > 1:
            parts.append(f"CP{self.cp}")
        hybrid = f"(HSDP{self.dp_shard})" if self.dp_shard else ""
        parts.append(f"DP{self.dp}" + hybrid + (f"(EP{self.ep})" if self.ep > 1 else ""))
        return " ".join(parts)

    def describe(self, serving: bool) -> str:
        """The knobs in words, as plans and explanations print them."""
        if serving:
            layout = self.layout.replace(" DP1", "").replace("DP1", "one GPU")
            return f"{self.weight_format} weights, {self.kv_format} KV cache, {layout}, batch {self.micro_batch}"
        offload = "" if self.offload is Offload.NONE else f", offload {self.offload}"
        return (
            f"{self.precision}, {self.optimizer}, recompute {self.recompute}, ZeRO-{self.zero_stage}, {self.layout}, "
            f"micro-batch {self.micro_batch}{offload}"
        )


@dataclass(frozen=True, slots=True)
class Pins:
    """User restrictions: None means searched over the default domain;
    a tuple is the allowed values (one value pins the knob)."""

    precision: tuple[Precision, ...] | None = None
    optimizer: tuple[Optimizer, ...] | None = None
    recompute: tuple[Recompute, ...] | None = None
    zero_stage: tuple[int, ...] | None = None
    tp: tuple[int, ...] | None = None
    dp: tuple[int, ...] | None = None
    micro_batch: tuple[int, ...] | None = None
    pp: tuple[int, ...] | None = None
    vpp: tuple[int, ...] | None = None
    sp: tuple[bool, ...] | None = None
    cp: tuple[int, ...] | None = None
    offload: tuple[Offload, ...] | None = None
    ep: tuple[int, ...] | None = None
    dp_shard: tuple[int, ...] | None = None  # 0: all of DP; DP_SHARD_NODE: one node's DP ranks
    weight_format: tuple[WeightFormat, ...] | None = None
    kv_format: tuple[KvFormat, ...] | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A whole training run: how many tokens, and the limits it must respect."""

    tokens: int  # training tokens
    tokens_source: str  # "given" or how the default was chosen
    budget_usd: float | None = None  # at most this much at on-demand prices
    deadline_s: float | None = None  # done within this many seconds


@dataclass(frozen=True, slots=True)
class Request:
    model: Model
    inventory: tuple[GpuStock, ...]
    workload: Workload
    pins: Pins
    objective: Objective
    top: int
    diverse: tuple[Diversity, ...] | None  # make the top-K plans differ in these knobs (best per combination)
    time_limit_s: float
    job: Job | None = None  # tokens, budget, deadline: time and cost of the whole run
    procurement: bool = False  # the inventory is what may be bought (caps per type), not what is owned
