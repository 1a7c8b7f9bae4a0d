"""Activation and logits formulas, each checked against its source."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import MOE_8x2, knobs, model

from planner import activations as act
from planner.specs import Accounting, AttentionKernel, Framework, LossKernel, Margins, Norm, Recompute, Workload
from planner.states import Stage

GPT = model(learned_positions=2048)  # GPT block: LayerNorm, 4h GeLU MLP, dropout, MHA (Korthikanti's setting)
LLAMA = model(
    ffn_size=11008, ffn_matrices=3, ffn_activation="swiglu", norm=Norm.RMSNORM, dropout=False, qkv_bias=False,
    linear_bias=False, tied_embeddings=False,
)


def workload(seq: int, attention: AttentionKernel = AttentionKernel.FLASH, framework: Framework = Framework.DEEPSPEED,
             global_batch: int | None = None) -> Workload:
    return Workload(seq, global_batch, Accounting.FULL, attention, framework, Margins(0, 0))


def megatron_eager(seq: int) -> Workload:
    return workload(seq, AttentionKernel.EAGER, Framework.MEGATRON)


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
@pytest.mark.parametrize("seq", [512, 2048])
def test_layer_reproduces_korthikanti_table2_tp(tp: int, seq: int) -> None:
    """Korthikanti et al. 2022, Table 2 (TP, no SP): sbh(10 + 24/t + 5as/(ht)) bytes per layer,
    plus the norms' fp32 statistics (2 x 8 bytes per token) the paper leaves out."""
    s, b, h, a = seq, 2, GPT.hidden_size, GPT.num_heads
    got = act.layer_activation_bytes(GPT, megatron_eager(s), knobs(recompute=Recompute.NONE, tp=tp, micro_batch=b))[0]
    assert got == s * b * h * 10 + s * b * h * 24 // tp + 5 * a * s * s * b // tp + s * b * 2 * 8


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_layer_reproduces_korthikanti_table2_tp_sp(tp: int) -> None:
    """Table 2, TP + SP: sbh/t (34 + 5as/h); the norm statistics are split too."""
    s, b, h, a = 2048, 1, GPT.hidden_size, GPT.num_heads
    got = act.layer_activation_bytes(GPT, megatron_eager(s), knobs(recompute=Recompute.NONE, tp=tp, sp=True))[0]
    assert got == (s * b * h * 10 + s * b * 2 * 8) // tp + s * b * h * 24 // tp + 5 * a * s * s * b // tp


@pytest.mark.parametrize("tp", [1, 2, 8])
def test_selective_recompute_matches_korthikanti_for_gpt_block(tp: int) -> None:
    """Table 2, TP + selective recomputation: sbh(10 + 24/t) per layer."""
    s, b, h = 2048, 1, GPT.hidden_size
    k = knobs(recompute=Recompute.SELECTIVE, tp=tp, micro_batch=b)
    per_layer = s * b * h * (10 + 24 // tp) + s * b * 2 * 8
    outside = s * b * h * (2 * 2 + 1) + s * b * 8  # final norm and LM-head inputs, embedding dropout mask
    assert act.activation_bytes(GPT, megatron_eager(s), k)[0] == GPT.num_layers * per_layer + outside


def test_full_recompute_keeps_layer_inputs_plus_one_layer() -> None:
    s, b, h = 4096, 1, LLAMA.hidden_size
    w = workload(s, framework=Framework.MEGATRON)
    k = knobs(recompute=Recompute.FULL, micro_batch=b)
    layer = act.layer_activation_bytes(LLAMA, w, k)[0]
    final_norm = 2 * s * b * h + 4 * s * b
    rotary = 2 * s * b * LLAMA.head_dim * 2
    expected = LLAMA.num_layers * 2 * s * b * h + layer + final_norm + 2 * s * b * h + rotary
    assert act.activation_bytes(LLAMA, w, k)[0] == expected


def test_flash_attention_drops_the_quadratic_term() -> None:
    k = knobs(recompute=Recompute.NONE)
    assert act.attention_core_bytes(LLAMA, workload(4096, AttentionKernel.EAGER), k)[0] == 4096 * 4096 * LLAMA.num_heads * (4 + 2)
    assert act.attention_core_bytes(LLAMA, workload(4096, AttentionKernel.FLASH), k)[0] == 4096 * LLAMA.num_heads * 4


def test_eager_llama_block_counts_fp32_norm_copies_swiglu_and_gqa() -> None:
    """HF Llama block in bf16 (bench/saved_tensors.py measures it): per RMSNorm an fp32 input copy
    plus the normalized bf16 tensor and an fp32 rstd per token; q/k/v/o with GQA widths under
    flash attention; 4 saved SwiGLU tensors; no dropout."""
    m = dataclasses.replace(LLAMA, num_kv_heads=8)
    s, b, h, f, kv = 1024, 1, m.hidden_size, m.ffn_size, m.kv_width
    got = act.layer_activation_bytes(m, workload(s), knobs(recompute=Recompute.NONE))[0]
    norms = 2 * ((4 + 2) * h + 4)
    expected = s * b * (norms + 2 * 2 * h + 2 * (h + 2 * kv + h) + 2 * 4 * f) + s * b * m.num_heads * 4
    assert kv == 1024 and got == expected


def test_megatron_fuses_swiglu_and_norms() -> None:
    k = knobs(recompute=Recompute.NONE)
    eager = act.layer_activation_bytes(LLAMA, workload(2048), k)[0]
    fused = act.layer_activation_bytes(LLAMA, workload(2048, framework=Framework.MEGATRON), k)[0]
    assert eager - fused == 2048 * (2 * 4 * LLAMA.hidden_size + 2 * LLAMA.ffn_size)


def test_moe_activations_scale_with_top_k() -> None:
    dense = model(ffn_matrices=3, ffn_size=14336, dropout=False)
    moe = model(ffn_matrices=3, ffn_size=14336, dropout=False, moe=MOE_8x2)
    k = knobs(recompute=Recompute.NONE)
    d = act.layer_activation_bytes(dense, workload(1024), k)[0]
    e = act.layer_activation_bytes(moe, workload(1024), k)[0]
    extra_mlp = 1024 * 2 * 4 * 14336  # one more expert's saved SwiGLU tensors per token
    dispatch = 1024 * 2 * 4096 * 2 + 1024 * 8 * 4  # dispatched copies (top-2) + fp32 router probabilities
    assert e - d == extra_mlp + dispatch


def test_context_parallel_splits_the_sequence_and_keeps_a_ring_chunk() -> None:
    w = workload(16384, framework=Framework.MEGATRON)
    one = act.layer_activation_bytes(LLAMA, w, knobs(recompute=Recompute.NONE))[0]
    four = act.layer_activation_bytes(LLAMA, w, knobs(recompute=Recompute.NONE, cp=4))[0]
    ring = 16384 // 4 * 2 * 2 * LLAMA.kv_width
    assert four == one // 4 + ring


@pytest.mark.parametrize("pp", [2, 4, 7])
def test_1f1b_first_stage_holds_pp_micro_batches_of_its_layers(pp: int) -> None:
    """Korthikanti Sec. 4.2.3 / Narayanan et al. 2021: the first stage stores pp micro-batches of L/p layers."""
    w = workload(2048, framework=Framework.MEGATRON)
    flat = knobs(recompute=Recompute.SELECTIVE, pp=1)
    staged = knobs(recompute=Recompute.SELECTIVE, pp=pp)
    layer = act.layer_activation_bytes(LLAMA, w, flat)[0]
    first = act.activation_bytes(LLAMA, w, staged, Stage.FIRST)[0]
    last = act.activation_bytes(LLAMA, w, staged, Stage.LAST)[0]
    rotary = 2 * 2048 * LLAMA.head_dim * 2
    assert first == LLAMA.num_layers * layer + pp * rotary  # 28 layers / pp stages x pp in flight
    head = 2048 * LLAMA.hidden_size * (2 + 2) + 2048 * 4  # final norm input (fused: 16-bit) + stats, LM-head input
    assert last == LLAMA.num_layers // pp * layer + rotary + head


def test_interleaved_schedule_multiplies_by_1_plus_p_minus_1_over_pv() -> None:
    """Korthikanti Sec. 4.2.3: interleaving with m stages per device costs (1 + (p-1)/(pm)) x."""
    w = workload(2048, framework=Framework.MEGATRON)
    k = knobs(recompute=Recompute.SELECTIVE, pp=4, vpp=7)  # 28 layers: 7 per stage, 1 per virtual stage
    num, den = act.held_layer_micro_batches(LLAMA, w, k)
    assert num[0] / den[0] == pytest.approx(LLAMA.num_layers * (1 + 3 / (4 * 7)))


def test_fewer_micro_batches_than_stages_hold_fewer() -> None:
    w = workload(2048, framework=Framework.MEGATRON, global_batch=2)
    k = knobs(pp=8, dp=1, micro_batch=1)
    assert act.in_flight(w, k)[0] == 2


@pytest.mark.parametrize(("loss", "bytes_per_logit"), [(LossKernel.FULL, 2 + 3 * 4), (LossKernel.FUSED, 2 + 4 + 2)])
def test_logits_at_the_loss_split_by_tp(loss: LossKernel, bytes_per_logit: int) -> None:
    w = dataclasses.replace(workload(4096), loss=loss)
    got = act.logits_bytes(LLAMA, w, knobs(tp=2, micro_batch=2))[0]
    assert got == 4096 * 2 * (LLAMA.vocab_size // 2) * bytes_per_logit
    staged = knobs(tp=2, micro_batch=2, pp=2)
    assert act.logits_bytes(LLAMA, w, staged, Stage.FIRST)[0] == 0


def test_fused_linear_loss_never_holds_the_whole_logits() -> None:
    """Liger's fused linear cross-entropy: chunks of about tokens x h / V rows; at 128k vocabulary and
    8k tokens it keeps far less than even the fused loss's 8 bytes per logit."""
    w = dataclasses.replace(workload(8192), loss=LossKernel.FUSED_LINEAR)
    k = knobs(tp=1, micro_batch=1)
    liger = act.logits_bytes(LLAMA, w, k)[0]
    fused = act.logits_bytes(LLAMA, dataclasses.replace(w, loss=LossKernel.FUSED), k)[0]
    assert liger < fused / 4
    assert liger >= 8192 * LLAMA.hidden_size * 2  # the hidden states' gradient is kept


def test_compile_fuses_norms_and_mlp() -> None:
    """torch.compile over an eager HF-style block saves what Megatron's fused kernels save
    (FSDP full shard: 16-bit residual, as Megatron)."""
    k = knobs(recompute=Recompute.NONE, tp=1, micro_batch=1, zero_stage=3)
    eager = act.layer_activation_bytes(LLAMA, workload(4096, framework=Framework.FSDP), k)[0]
    compiled = act.layer_activation_bytes(LLAMA, dataclasses.replace(workload(4096, framework=Framework.FSDP), compile=True), k)[0]
    megatron = act.layer_activation_bytes(LLAMA, workload(4096, framework=Framework.MEGATRON), k)[0]
    assert compiled < eager
    assert compiled == megatron


def test_activations_never_grow_with_dp() -> None:
    w = workload(2048, framework=Framework.MEGATRON, global_batch=64)
    values = [act.activation_bytes(LLAMA, w, knobs(pp=8, dp=d))[0] for d in (1, 2, 4, 8, 16, 32, 64)]
    assert np.all(np.diff(values) <= 0)
