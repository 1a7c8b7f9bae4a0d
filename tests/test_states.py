"""Model-state formulas (weights, gradients, optimizer, buffers, offload) against their sources."""

from __future__ import annotations

import pytest
from helpers import MOE_8x2, flat_counts, knobs, model

from planner import states
from planner.architecture import param_counts
from planner.specs import Accounting, Framework, Offload, Optimizer, Precision
from planner.states import Stage

FULL, SEED = Accounting.FULL, Accounting.SEED
LLAMA = model(ffn_size=11008, ffn_matrices=3, dropout=False, qkv_bias=False, linear_bias=False, tied_embeddings=False)


def gpu_states(p: int, framework: Framework, accounting: Accounting = FULL, largest: int = 0, **kw: object) -> states.States:
    return states.model_states(flat_counts(p, largest), LLAMA, knobs(**kw), framework, accounting, Stage.FIRST)


def on_gpu(s: states.States) -> int:
    return int(s.weights[0] + s.gradients[0] + s.optimizer[0] + s.buffers[0])


def test_zero_paper_figure1_7_5b_on_64_gpus() -> None:
    """ZeRO (Rajbhandari et al. 2020) Fig. 1: 7.5B params, K=12, N_d=64: baseline 120 GB,
    P_os 31.4 GB, P_os+g 16.6 GB, P_os+g+p 1.9 GB per device (seed accounting)."""
    for stage, gb in {0: 120, 1: 31.4, 2: 16.6, 3: 1.9}.items():
        got = on_gpu(gpu_states(7_500_000_000, Framework.DEEPSPEED, SEED, zero_stage=stage, dp=64))
        assert round(got / 1e9, 1) == pytest.approx(gb, abs=0.051)


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_seed_zero_stages_shard_states_over_dp(zero: int) -> None:
    one, eight = gpu_states(8 * 10**9, Framework.DEEPSPEED, SEED, zero_stage=zero), gpu_states(8 * 10**9, Framework.DEEPSPEED, SEED, zero_stage=zero, dp=8)
    for field, stage in (("weights", 3), ("gradients", 2), ("optimizer", 1)):
        assert getattr(one, field)[0] / getattr(eight, field)[0] == (8 if zero >= stage else 1)


P, LARGEST = 2_851_000_000, 32_899_072  # DeepSpeed docs' t5-3b example (largest layer: 32128 x 1024 embedding)
BUCKET = 500_000_000 * 2  # DeepSpeed's default reduce bucket, 16-bit


@pytest.mark.parametrize(
    ("zero", "offload", "expected"),
    [
        (3, Offload.NONE, 18 * P // 8 + 4 * LARGEST),  # estimate_zero3: 18P/N + 4 x largest layer -> 6.10 GiB
        (3, Offload.OPTIMIZER, 2 * P // 8 + 4 * LARGEST),  # optimizer offloaded -> 0.79 GiB
        (3, Offload.PARAMS, 4 * LARGEST),  # parameters offloaded too -> 0.12 GiB
    ],
)
def test_deepspeed_zero3_reproduces_its_estimator(zero: int, offload: Offload, expected: int) -> None:
    """DeepSpeed docs, 'Memory Requirements': estimate_zero3_model_states_mem_needs_all_live, 1 node x 8 GPUs."""
    got = on_gpu(gpu_states(P, Framework.DEEPSPEED, largest=LARGEST, zero_stage=zero, dp=8, offload=offload))
    assert got == pytest.approx(expected, rel=1e-6)


def test_deepspeed_zero2_keeps_gradient_partitions_below_the_all_live_estimate() -> None:
    """ZeRO-2 keeps only its 16-bit gradient partition (DeepSpeed docs, stage 2); the estimator's
    4P + 16P/N assumes all gradients alive, so it bounds the model from above."""
    got = on_gpu(gpu_states(P, Framework.DEEPSPEED, zero_stage=2, dp=8))
    assert got == 2 * P + (2 + 16) * P // 8 + BUCKET
    assert got < 4 * P + 16 * P // 8
    zero1 = on_gpu(gpu_states(P, Framework.DEEPSPEED, zero_stage=1, dp=8))
    assert zero1 == 4 * P + 16 * P // 8 + BUCKET  # stage 1 keeps every 16-bit gradient: the estimator's formula


def test_megatron_distributed_optimizer_is_6_plus_12_over_dp() -> None:
    """Megatron-LM docs: 18 bytes/param with fp32 gradient accumulation; 6 + 12/DP with the distributed optimizer."""
    assert on_gpu(gpu_states(10**9, Framework.MEGATRON, zero_stage=0, dp=8)) == 18 * 10**9
    assert on_gpu(gpu_states(10**9, Framework.MEGATRON, zero_stage=1, dp=8)) == 6 * 10**9 + 12 * 10**9 // 8


def test_ddp_with_autocast_keeps_fp32_masters_buckets_and_casts() -> None:
    """PyTorch DDP + autocast: fp32 params 4, fp32 grads 4, bucket copy 4 (gradient_as_bucket_view=False),
    AdamW moments 8, bf16 casts saved for backward 2: 22 bytes per parameter; a single process has no buckets."""
    assert on_gpu(gpu_states(10**9, Framework.FSDP, zero_stage=0, dp=2)) == 22 * 10**9
    assert on_gpu(gpu_states(10**9, Framework.FSDP, zero_stage=0, dp=1)) == 18 * 10**9


def test_fsdp_full_shard_is_16_over_n_plus_gathered_units() -> None:
    counts = param_counts(LLAMA)
    s = states.model_states(counts, LLAMA, knobs(zero_stage=3, dp=8), Framework.FSDP, FULL, Stage.FIRST)
    p = counts.total
    assert s.weights[0] + s.gradients[0] + s.optimizer[0] == pytest.approx(16 * p / 8, rel=1e-6)
    block, root = counts.block_max, counts.embedding + counts.head_sharded + counts.final_norm
    # two blocks and the root gathered in bf16; a block's bf16 gradients, its fp32 reduce-scatter input and the
    # previous block's still in flight (FSDP2 on the CPU, bench/dist_peak.py)
    assert s.buffers[0] == (2 * block + root) * 2 + block * (2 + 4 + 4)


def test_fsdp_shard_grad_op_shards_parameters_and_keeps_an_unsharded_compute_copy() -> None:
    """SHARD_GRAD_OP: fp32 parameters sharded (4P/N) plus their unsharded copy in the compute dtype from forward
    to backward (bf16 2P under mixed precision, fp32 4P without); measured with FSDP2 on the CPU."""
    counts = param_counts(LLAMA)
    p = counts.total
    for precision, copy in ((Precision.BF16_MIXED, 2), (Precision.FP32, 4)):
        s = states.model_states(counts, LLAMA, knobs(zero_stage=2, dp=8, precision=precision), Framework.FSDP, FULL, Stage.FIRST)
        assert s.weights[0] == pytest.approx(4 * p / 8 + copy * p, rel=1e-6)


@pytest.mark.parametrize(
    ("optimizer", "precision", "bytes_per_param"),
    [
        (Optimizer.ADAMW, Precision.BF16_MIXED, 12),
        (Optimizer.ADAMW, Precision.BF16, 4),  # pure bf16: m and v in bf16, no master
        (Optimizer.ADAMW, Precision.FP32, 8),
        (Optimizer.LION, Precision.BF16_MIXED, 8),  # master + one momentum (Chen et al. 2023)
        (Optimizer.SGD_MOMENTUM, Precision.FP32, 4),
        (Optimizer.SGD, Precision.BF16_MIXED, 4),  # master only
    ],
)
def test_optimizer_bytes_per_param(optimizer: Optimizer, precision: Precision, bytes_per_param: int) -> None:
    got = gpu_states(10**9, Framework.MEGATRON, precision=precision, optimizer=optimizer).optimizer[0]
    assert got == bytes_per_param * 10**9


def test_adamw_8bit_adds_block_scales_and_fp32_small_tensors() -> None:
    """bitsandbytes: 1-byte m and v, one fp32 absmax per 256-element block and state,
    fp32 states for tensors under 4096 elements."""
    counts = param_counts(LLAMA)
    k = knobs(optimizer=Optimizer.ADAMW_8BIT)
    got = states.optimizer_state_bytes(counts, counts.total, k, FULL)[0]
    large = counts.total - counts.bnb_small
    assert got == 2 * large + 8 * counts.bnb_blocks + 8 * counts.bnb_small
    assert 2.03 < got / counts.total < 2.04


def test_adafactor_states_are_factored() -> None:
    counts = param_counts(LLAMA)
    got = states.optimizer_state_bytes(counts, counts.total, knobs(optimizer=Optimizer.ADAFACTOR, precision=Precision.FP32), FULL)[0]
    assert got == 4 * counts.adafactor_state < 0.01 * 4 * counts.total


def test_fp8_mixed_keeps_an_fp8_weight_copy() -> None:
    assert gpu_states(10**9, Framework.MEGATRON, precision=Precision.FP8_MIXED).weights[0] == 3 * 10**9


def test_pipeline_stages_split_layers_and_put_embedding_first_head_last() -> None:
    counts = param_counts(LLAMA)
    k = knobs(pp=4)
    first = states.params_on_gpu(counts, LLAMA, k, Stage.FIRST).all[0]
    last = states.params_on_gpu(counts, LLAMA, k, Stage.LAST).all[0]
    block = counts.block_max
    assert first == 7 * block + counts.embedding
    assert last == 7 * block + counts.head_sharded + counts.final_norm
    whole = states.params_on_gpu(counts, LLAMA, knobs(), Stage.FIRST).all[0]
    assert whole == counts.total


def test_tensor_parallel_splits_matrices_not_vectors() -> None:
    counts = param_counts(LLAMA)
    assert states.params_on_gpu(counts, LLAMA, knobs(tp=4), Stage.FIRST).all[0] == -(-counts.tp_sharded // 4) + counts.replicated


def test_expert_parallelism_splits_routed_experts_where_states_are_not_sharded() -> None:
    """Megatron-Core MoE: EP ranks come from DP; each holds num_experts / EP experts, and the
    distributed optimizer shards expert states over the expert-data-parallel group (DP / EP)."""
    moe = model(ffn_matrices=3, ffn_size=14336, dropout=False, moe=MOE_8x2)
    counts = param_counts(moe)
    prm = states.params_on_gpu(counts, moe, knobs(ep=8, dp=8), Stage.FIRST)
    assert prm.all[0] == counts.total
    assert prm.local[0] == counts.total - counts.routed_experts + counts.routed_experts // 8
    dense8 = states.model_states(counts, moe, knobs(zero_stage=1, dp=8, ep=1), Framework.MEGATRON, FULL, Stage.FIRST)
    ep8 = states.model_states(counts, moe, knobs(zero_stage=1, dp=8, ep=8), Framework.MEGATRON, FULL, Stage.FIRST)
    assert ep8.weights[0] < dense8.weights[0] / 3  # experts are ~97% of the parameters
    assert ep8.optimizer[0] == dense8.optimizer[0]  # sharded over DP either way


def test_offload_moves_bytes_to_cpu_not_away() -> None:
    on = gpu_states(10**9, Framework.DEEPSPEED, zero_stage=2, dp=4)
    off = gpu_states(10**9, Framework.DEEPSPEED, zero_stage=2, dp=4, offload=Offload.OPTIMIZER)
    assert off.optimizer[0] == 0 and off.cpu[0] == on.optimizer[0] + 4 * 10**9 // 4  # states + fp32 gradient partitions
    assert off.gradients[0] == 0 and off.weights[0] == on.weights[0]
    assert on.cpu[0] == 0


def test_gathered_block_at_ep1_is_the_largest_block_and_ep_splits_its_routed_experts() -> None:
    """ZeRO-3/FSDP gather a block's parameters on one expert-parallel rank: its 1/EP of the routed
    experts, the shared experts, the router and the attention whole."""
    from planner.architecture import block_params_per_ep_rank
    from planner.catalog import load_catalog

    catalog = load_catalog()
    for m in catalog.models:
        assert int(block_params_per_ep_rank(m, [1])[0]) == param_counts(m).block_max, m.id
    v3 = catalog.model("deepseek-v3")
    counts = param_counts(v3)
    ep16 = int(block_params_per_ep_rank(v3, [16])[0])
    assert ep16 == counts.block_max - counts.block_routed_experts + counts.block_routed_experts // 16
