"""Fine-tuning with adapters (LoRA, QLoRA) and serving (infer): the physics of
each mode, the seeds' quick estimate, and the issue's acceptance commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import flat_counts, model

from planner import evaluate_config, memory
from planner.adapters import NF4_BITS_X16384
from planner.architecture import adapter_params_per_block
from planner.catalog import load_catalog
from planner.cli import main
from planner.grid import KnobArrays
from planner.serving import kv_bytes_per_token
from planner.specs import (
    Accounting,
    AttentionKernel,
    Framework,
    Knobs,
    KvFormat,
    Margins,
    Mode,
    Optimizer,
    Precision,
    Recompute,
    WeightFormat,
    Workload,
)

CATALOG = load_catalog()
GB = 10**9


def catalog_model(name: str):
    return CATALOG.model(name)


@pytest.mark.parametrize(
    ("name", "rank", "targets", "trainable"),
    [
        # PEFT's print_trainable_parameters() for Llama-2-7B, r=16 on q,k,v,o,gate,up,down: 39,976,960
        ("llama-2-7b", 16, "all", 39_976_960),
        # r=8 on q,k,v,o: 32 layers x 4 x 8 x (4096 + 4096)
        ("llama-2-7b", 8, "attn", 8_388_608),
        # r=16 on gate, up, down only: 32 x 16 x 3 x (4096 + 11008)
        ("llama-2-7b", 16, "mlp", 23_199_744),
    ],
)
def test_lora_adapter_parameter_counts(name: str, rank: int, targets: str, trainable: int) -> None:
    m = catalog_model(name)
    assert m.num_layers * adapter_params_per_block(m, rank, targets) == trainable


def test_gqa_adapters_use_the_narrow_kv_projections() -> None:
    """Llama-2-70B's k and v project 8192 -> 1024: r x (8192 + 1024) each, not r x 2 x 8192."""
    m = catalog_model("llama-2-70b")
    assert adapter_params_per_block(m, 1, "attn") == 2 * (8192 + 8192) + 2 * (8192 + 1024)


def test_nf4_with_double_quantization_costs_0_516_bytes_per_weight() -> None:
    """QLoRA Sec. 3: 4 bits + 8-bit absmax per 64 weights + fp32 constant per 256 absmax
    = 4 + 8/64 + 32/(64 x 256) = 4.127 bits per weight."""
    bits = NF4_BITS_X16384 / 16384
    assert bits == pytest.approx(4 + 8 / 64 + 32 / (64 * 256))
    assert bits / 8 == pytest.approx(0.5159, abs=1e-4)


def _adapter_row(mode: str, **extra: object):
    pins = {"precision": "bf16-mixed", "optimizer": "adamw", "recompute": "full", "zero": 0, "tp": 1, "dp": 1, "micro_batch": 1}
    return evaluate_config("llama-2-7b", "a100-80g:1", mode=mode, seq_len=2048, **{**pins, **extra})


def test_lora_trains_only_the_adapters() -> None:
    """Frozen bf16 base (2 B/param), fp32 adapters with fp32 gradients and two fp32 Adam moments."""
    adapters = 39_976_960
    mem = _adapter_row("lora").memory_bytes
    assert mem["gradients"] == adapters * 4
    assert mem["optimizer"] == adapters * 8
    assert mem["weights"] == 6_738_415_616 * 2 + adapters * 4  # Llama-2-7B: 6,738,415,616 parameters


def test_qlora_base_is_nf4_with_fp32_embeddings_head_and_norms() -> None:
    row = _adapter_row("qlora")
    adapters = 39_976_960
    embed_and_head = 2 * 32000 * 4096
    norms = (2 * 32 + 1) * 4096
    matrices = 6_738_415_616 - embed_and_head - norms
    nf4 = -(-matrices * NF4_BITS_X16384 // (8 * 16384))
    # PEFT's prepare_model_for_kbit_training leaves every non-quantized parameter in fp32
    assert row.memory_bytes["weights"] == nf4 + (embed_and_head + norms) * 4 + adapters * 4


def test_adapters_keep_full_training_activations() -> None:
    """Activations flow through the frozen layers: LoRA's activations match full fine-tuning's."""
    full = _adapter_row("finetune")
    lora = _adapter_row("lora")
    assert lora.memory_bytes["activations"] == full.memory_bytes["activations"]
    assert lora.total_bytes < full.total_bytes / 3


def test_paged_optimizer_moves_states_to_host_memory() -> None:
    on_gpu = _adapter_row("qlora", optimizer="adamw-8bit")
    paged = _adapter_row("qlora", optimizer="adamw-8bit", offload="paged")
    assert on_gpu.memory_bytes["optimizer"] > 0
    assert paged.memory_bytes["optimizer"] == 0
    assert paged.cpu_bytes == on_gpu.memory_bytes["optimizer"]


@pytest.mark.parametrize(
    ("name", "kv", "per_token_bytes"),
    [
        # vLLM paper (Kwon et al. 2023, Sec. 3): OPT-13B "800 KB" per token = 2 x 40 layers x 5120 x 2 bytes;
        # Llama-2-13B has the same shape: 819,200 bytes
        ("llama-2-13b", KvFormat.FP16, 819_200),
        ("llama-2-7b", KvFormat.BF16, 524_288),  # 2 x 32 x 4096 x 2
        ("llama-2-70b", KvFormat.BF16, 327_680),  # GQA: 8 KV heads of 128: 2 x 80 x 1024 x 2
        ("llama-2-70b", KvFormat.FP8, 163_840),
    ],
)
def test_kv_cache_bytes_per_token(name: str, kv: KvFormat, per_token_bytes: int) -> None:
    assert kv_bytes_per_token(catalog_model(name), kv) == per_token_bytes


def test_kv_cache_of_a_plan_is_per_token_x_context_x_batch_over_tp() -> None:
    row = evaluate_config("70b", "h100-80g:8", mode="infer", weight_format="bf16", kv_dtype="bf16", tp=8, pp=1, dp=1, batch=4, context=32768)
    assert row.memory_bytes["kv_cache"] == 327_680 * 32768 * 4 // 8
    assert row.memory_bytes["gradients"] == row.memory_bytes["optimizer"] == 0


def test_int4_group_scales_cost_about_4_16_bits_per_weight() -> None:
    """GPTQ/AWQ int4, group 128: 4 bits + an fp16 scale and a 4-bit zero per 128 weights."""
    bf16 = evaluate_config("llama-2-7b", "a100-80g:1", mode="infer", weight_format="bf16", kv_dtype="bf16", tp=1, pp=1, dp=1)
    int4 = evaluate_config("llama-2-7b", "a100-80g:1", mode="infer", weight_format="int4", kv_dtype="bf16", tp=1, pp=1, dp=1)
    embed_and_head = 2 * 32000 * 4096
    norms = (2 * 32 + 1) * 4096
    matrices = 6_738_415_616 - embed_and_head - norms
    assert bf16.memory_bytes["weights"] == 6_738_415_616 * 2
    assert int4.memory_bytes["weights"] == -(-matrices * (4 * 128 + 20) // (8 * 128)) + (embed_and_head + norms) * 2


@pytest.mark.parametrize(
    ("params", "fmt", "weights_gb", "total_gb"),
    [
        (6 * 10**9, WeightFormat.FP16, 12, 14.4),  # seed 001: ChatGLM-6B fp16 12 GB -> 14.4 GB with the 1.2 rule
        (7 * 10**9, WeightFormat.FP16, 14, 16.8),  # seed 000: 7B fp16 14 GB
        (13 * 10**9, WeightFormat.FP16, 26, 31.2),  # seed 000: 13B 26 GB
        (65 * 10**9, WeightFormat.FP16, 130, 156),  # seed 000: 65B 130 GB
        (7 * 10**9, WeightFormat.INT4, 3.5, 4.2),  # seed 000: 7B int4 3.5 GB
    ],
)
def test_seed_quick_estimate_through_the_memory_model(params: int, fmt: WeightFormat, weights_gb: float, total_gb: float) -> None:
    """The serving memory model in seed accounting is exactly weights x 1.2 (seeds 000/001)."""
    w = Workload(2048, None, Accounting.SEED, AttentionKernel.FLASH, Framework.DEEPSPEED, Margins(0, 0), mode=Mode.INFER)
    k = KnobArrays.from_knobs(
        [Knobs("gpu", Precision.BF16_MIXED, Optimizer.ADAMW, Recompute.NONE, 0, 1, 1, 1, weight_format=fmt, kv_format=KvFormat.FP16)], ["gpu"]
    )
    b = memory.breakdown(model(), flat_counts(params), w, k)
    assert int(b.weights[0]) == weights_gb * GB
    assert int(b.total[0]) == round(total_gb * GB)


def test_seed_quick_estimate_from_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--model", "llama-2-7b", "--gpus", "a100-40g:1", "--mode", "infer", "--accounting", "seed",
                 "--weight-format", "fp16", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    row = doc["plans"][0]
    assert row["memory_bytes"]["weights"] == 6_738_415_616 * 2
    assert row["total_bytes"] == -(-6_738_415_616 * 2 * 6 // 5)


# --- the acceptance commands ---------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_qlora_7b_fits_one_4090(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, ["--model", "7b", "--gpus", "4090:1", "--mode", "qlora", "--json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "optimal" and doc["request"]["mode"] == "qlora"
    best = doc["plans"][0]
    assert best["gpu_count"] == 1 and best["fits"]
    assert best["total_bytes"] <= best["usable_bytes"]


def test_infer_70b_maximize_batch_is_explained(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, ["--model", "70b", "--gpus", "h100-80g:8", "--mode", "infer", "--context", "32768", "--maximize", "batch"])
    assert code == 0, err
    assert "largest batch" in out
    doc_code, doc_out, _ = run(capsys, ["--model", "70b", "--gpus", "h100-80g:8", "--mode", "infer", "--context", "32768",
                                        "--maximize", "batch", "--json"])
    doc = json.loads(doc_out)
    best = doc["plans"][0]
    assert doc_code == 0 and doc["maximized"]["quantity"] == "batch"
    batch = doc["maximized"]["value"]
    assert best["micro_batch"] == batch > 1
    # one more sequence must not fit in the same inventory, same knobs
    more = evaluate_config("70b", "h100-80g:8", mode="infer", context=32768, batch=batch + 1, weight_format=best["weight_format"],
                           kv_dtype=best["kv_format"], tp=best["tp"], pp=best["pp"], dp=1)
    assert not more.fits
    # KV cache at the answer is what the per-token formula says
    per_token = kv_bytes_per_token(catalog_model("llama-2-70b"), KvFormat(best["kv_format"]))
    assert best["memory_bytes"]["kv_cache"] == per_token * 32768 * batch // (best["tp"] * best["pp"])
    assert best["throughput"]["usd_per_million_tokens"] > 0


def test_full_finetune_7b_on_a_24gb_card_does_not_fit_and_says_what_would(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, ["--model", "7b", "--gpus", "4090:1", "--mode", "finetune", "--json"])
    assert code == 1, err
    doc = json.loads(out)
    assert doc["status"] == "infeasible"
    fixes = " ".join(f["flags"] for f in doc["fixes"])
    for needed in ("--mode lora", "--mode qlora", "--offload", "--gpus"):
        assert needed in fixes, (needed, fixes)


def test_finetune_defaults_to_the_models_sequence_length_and_a_small_batch(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, ["--model", "llama-2-7b", "--gpus", "a100-80g:8", "--mode", "finetune", "--json"])
    doc = json.loads(out)
    assert doc["request"]["seq_len"] == catalog_model("llama-2-7b").default_seq_len
    assert doc["request"]["global_batch"] == 64  # Llama 2-Chat's SFT batch


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "infer", "--zero", "3"], "--zero has no meaning with --mode infer"),
        (["--mode", "infer", "--optimizer", "adamw"], "--optimizer has no meaning with --mode infer"),
        (["--mode", "lora", "--weight-format", "int4"], "--weight-format has no meaning with --mode lora"),
        (["--mode", "pretrain", "--kv-dtype", "fp8"], "--kv-dtype has no meaning with --mode pretrain"),
        (["--mode", "finetune", "--offload", "paged"], "--offload paged"),
        (["--mode", "infer", "--maximize", "speed"], "--maximize"),
        (["--mode", "lora", "--lora-targets", "ffn"], "--lora-targets"),
    ],
)
def test_mode_flag_misuse_is_a_one_line_error(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, _out, err = run(capsys, ["--model", "7b", "--gpus", "a100-80g:1", *args])
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_fp8_formats_are_offered_only_where_the_gpu_has_fp8(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, ["--model", "7b", "--gpus", "a100-80g:1", "--mode", "infer", "--weight-format", "fp8"])
    assert code == 2 and "--weight-format fp8 is not supported by a100-80g" in err
    code, out, _ = run(capsys, ["--model", "7b", "--gpus", "h100-80g:1", "--mode", "infer", "--weight-format", "fp8", "--json"])
    assert code == 0 and json.loads(out)["plans"][0]["weight_format"] == "fp8"


def test_serving_batch_fits_monotonically() -> None:
    """More concurrent sequences never take less memory (the solver's DP pre-pass relies on monotone memory)."""
    totals = [
        evaluate_config("llama-2-13b", "a100-40g:1", mode="infer", weight_format="int8", kv_dtype="fp16", tp=1, pp=1, dp=1,
                        batch=b, context=4096).total_bytes
        for b in (1, 2, 4, 8, 16)
    ]
    assert np.all(np.diff(totals) > 0)



def test_deepseek_v3_serving_caches_the_mla_latent_whole_on_every_tp_rank() -> None:
    """MLA caches kv_lora_rank + qk_rope_head_dim = 576 values per token and layer (DeepSeek-V2
    Sec. 2.1.2), the same on every TP rank (vLLM's MLA cache is not split by heads); pipeline
    stages split it by layers."""
    from planner.api import evaluate_config

    common = {"mode": "infer", "dp": "1", "batch": 16, "context": 8192, "weight_format": "fp8", "kv_dtype": "bf16"}
    tp8 = evaluate_config("deepseek-v3", "h200:8", tp="8", pp="1", **common)
    pp8 = evaluate_config("deepseek-v3", "h200:8", tp="1", pp="8", **common)
    assert tp8.memory_bytes["kv_cache"] == 61 * 576 * 2 * 8192 * 16
    assert pp8.memory_bytes["kv_cache"] == 8 * 576 * 2 * 8192 * 16  # ceil(61 / 8) layers on the fullest stage


def test_zero3_lora_base_of_an_moe_is_sharded_once_not_split_by_ep_and_then_sharded() -> None:
    """Mixtral-8x7B LoRA under ZeRO-3 on 8 GPUs with EP 8: each GPU holds 1/8 of the 16-bit base
    (experts split over EP, then over the expert-data-parallel group of 1). The base was divided by
    EP and then by DP again, 1/64 of the experts, which let DeepSeek-V3 LoRA 'fit' on 8 H100."""
    from planner.api import evaluate_config
    from planner.architecture import param_counts

    row = evaluate_config("mixtral-8x7b", "h100:8", mode="lora", zero="3", dp="8", ep="8", tp="1", precision="bf16-mixed",
                          optimizer="adamw", recompute="full", micro_batch="1")
    base_per_gpu = param_counts(CATALOG.model("mixtral-8x7b")).total * 2 // 8
    assert base_per_gpu <= row.memory_bytes["weights"] < base_per_gpu * 1.05
    from planner import plan

    assert not plan("deepseek-v3", "h100:8", mode="lora").fits  # 1.34 TB of bf16 weights on 640 GB
