"""`plan`: parse, call the library, render. Nothing else lives here.

Exit codes: 0 a plan fits, 1 nothing fits (the reason is printed), 2 bad
input (one line on stderr), 3 internal error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from planner.errors import PlannerInputError

app = typer.Typer(
    add_completion=False,
    invoke_without_command=True,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    help="Which training configurations fit on which GPUs, ranked. Example: plan --model 13b --gpus a100-40g:8",
)

KNOB_HELP = "one value pins it, a comma list restricts it, 'any' widens it to everything known; default: searched"


@app.callback()
def plan_command(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m", help="model name or alias (e.g. 13b, llama3.1-8b); see `plan models`")] = None,
    params: Annotated[str | None, typer.Option(help="instead of --model: a model of this many parameters in a standard Llama-style shape, e.g. 13e9 or 30B")] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", "-g", help="inventory TYPE:COUNT[,TYPE:COUNT...], e.g. a100-40g:8")] = None,
    mode: Annotated[str, typer.Option(help="pretrain, finetune (full), lora, qlora or infer (serving)")] = "pretrain",
    seq_len: Annotated[int | None, typer.Option(help="tokens per sequence [default: the model's pretraining length]")] = None,
    context: Annotated[int | None, typer.Option(help="serving: prompt + generated tokens per sequence (same as --seq-len)")] = None,
    batch: Annotated[int | None, typer.Option(help="serving: concurrent sequences [default: 1]")] = None,
    maximize: Annotated[str | None, typer.Option(help="serving: the largest context or batch the inventory holds (context|batch)")] = None,
    lora_rank: Annotated[int, typer.Option(help="adapter rank for lora/qlora")] = 16,
    lora_targets: Annotated[str, typer.Option(help="adapted layers for lora/qlora: attn, mlp or all")] = "all",
    weight_format: Annotated[str | None, typer.Option(help=f"serving: bf16, fp16, fp8, int8, int4 (GPTQ/AWQ), nf4, nf4-dq, fp4, fp4-dq, llm-int8 (bitsandbytes), fp32; {KNOB_HELP}")] = None,
    kv_dtype: Annotated[str | None, typer.Option(help=f"serving: KV-cache bf16, fp16 or fp8; {KNOB_HELP}")] = None,
    global_batch: Annotated[str | None, typer.Option(help="sequences per optimizer step (1024), or tokens (4M-tokens) [default: not constrained; for a run: 4M tokens]")] = None,
    precision: Annotated[str | None, typer.Option(help=f"fp32, fp16, bf16, fp16-mixed, bf16-mixed, fp8-mixed; {KNOB_HELP} (mixed formats the GPU supports)")] = None,
    optimizer: Annotated[str | None, typer.Option(help=f"adamw, adamw-8bit, sgd-momentum, sgd, adafactor, lion; {KNOB_HELP} (adamw, adamw-8bit)")] = None,
    recompute: Annotated[str | None, typer.Option(help=f"none, selective, full; {KNOB_HELP}")] = None,
    tp: Annotated[str | None, typer.Option(help=f"tensor-parallel degree; {KNOB_HELP}")] = None,
    dp: Annotated[str | None, typer.Option(help=f"data-parallel degree; {KNOB_HELP}")] = None,
    zero: Annotated[str | None, typer.Option(help=f"ZeRO stage 0-3; {KNOB_HELP}")] = None,
    micro_batch: Annotated[str | None, typer.Option(help=f"sequences per GPU per micro-step; {KNOB_HELP}")] = None,
    pp: Annotated[str | None, typer.Option(help=f"pipeline stages (1F1B; megatron, fsdp); {KNOB_HELP}")] = None,
    vpp: Annotated[str | None, typer.Option(help="virtual stages per pipeline rank (interleaved 1F1B; megatron) [default: 1]")] = None,
    sp: Annotated[bool | None, typer.Option("--sp/--no-sp", help="Megatron sequence parallelism with TP [default: on with TP for megatron and fsdp]")] = None,
    cp: Annotated[str | None, typer.Option(help=f"context-parallel degree (megatron, fsdp; needs flash); {KNOB_HELP}")] = None,
    offload: Annotated[str | None, typer.Option(help="CPU offload: none, optimizer, params, paged (lora/qlora: bitsandbytes paged optimizer) or any [default: none; it slows steps]")] = None,
    ep: Annotated[str | None, typer.Option(help=f"expert-parallel degree for MoE models (ranks from DP); {KNOB_HELP}")] = None,
    dp_shard: Annotated[str | None, typer.Option(help="fsdp hybrid sharding (HSDP): DP ranks that shard the states within each replica: all (FSDP full shard), node (one node's ranks) or a size; a comma list restricts it [default: searched: all, node]")] = None,
    minimize: Annotated[str | None, typer.Option(help="gpus (fewest GPUs), cost (the run's $ with --tokens, else $/hour) or time (to train the tokens) [default: gpus; cost with --buy]")] = None,
    buy: Annotated[bool, typer.Option("--buy", help="procurement: choose GPU type and count from the catalog's priced GPUs (--gpus then lists allowed types, TYPE or TYPE:<=N)")] = False,
    tokens: Annotated[str | None, typer.Option(help="training tokens of the run, e.g. 2T, 300B [default with --minimize time: 20 per parameter]")] = None,
    budget: Annotated[str | None, typer.Option(help="most the run may cost at on-demand prices, USD, e.g. 2M")] = None,
    deadline: Annotated[str | None, typer.Option(help="longest the run may take, e.g. 30d, 36h")] = None,
    top: Annotated[int, typer.Option(help="how many distinct plans to rank")] = 5,
    diverse: Annotated[str | None, typer.Option(help="make the plans differ in this knob (best per value): gpu, precision, optimizer, recompute, zero, tp, micro-batch")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="say why the first plan wins (verified by re-solving)")] = False,
    breakdown: Annotated[bool, typer.Option("--breakdown", "--wide", help="show every memory component per GPU (a wider table)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON document (schema: planner/plan.schema.json)")] = False,
    output_format: Annotated[str, typer.Option("--format", help="table, json, csv or markdown")] = "table",
    output: Annotated[Path | None, typer.Option(help="write the output to this file instead of the terminal")] = None,
    plot: Annotated[Path | None, typer.Option(help="also draw the plans' memory (and with a run, the cost/time front) to this PNG; needs matplotlib")] = None,
    accounting: Annotated[str, typer.Option(help="full (the planner's model) or seed (the seed documents' formulas only)")] = "full",
    attention: Annotated[str, typer.Option(help="flash (fused kernel, no s x s scores) or eager (explicit softmax)")] = "flash",
    loss: Annotated[str | None, typer.Option(help="cross-entropy: full (eager, fp32 logits), fused (Megatron/flash-attn/compiled), chunked (torchtune), fused-linear (Liger) [default: the stack's]")] = None,
    framework: Annotated[str, typer.Option(help="training stack: megatron, nemo, megatron-deepspeed, deepspeed (HF model + ZeRO), hf (Trainer/accelerate), fsdp, torchtitan, llm-foundry, torchtune")] = "deepspeed",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (PyTorch-eager stacks): fused norms, activations and loss")] = False,
    margin: Annotated[str | None, typer.Option(help="per-GPU margin beyond the counted tensors: GiB outside the allocator (2, 2GiB) or % of the allocated peak (5%) [default: the stack's fitted margins]")] = None,
    overhead_gib: Annotated[float | None, typer.Option(help="per-GPU memory outside the allocator (CUDA context, NCCL) in GiB [default: the stack's]")] = None,
    fragmentation_pct: Annotated[float | None, typer.Option(help="allocator slack it cannot hand out, % of the allocated peak [default: the stack's]")] = None,
    time_limit: Annotated[float, typer.Option(help="solver time limit in seconds")] = 10.0,
    catalog: Annotated[list[Path] | None, typer.Option(help="extra catalog TOML adding or overriding GPUs/models (repeatable)")] = None,
) -> None:
    if ctx.invoked_subcommand is not None:
        ctx.obj = catalog or []
        return
    if params is not None:
        if model is not None:
            raise PlannerInputError("give --model or --params, not both")
        from planner.adhoc import model_with_params
        from planner.units import parse_count

        model = model_with_params(parse_count("--params", params))  # type: ignore[assignment]
    if model is None or (gpus is None and not buy):
        missing = " and ".join(f"--{n}" for n, v in (("model", model), ("gpus", gpus or buy)) if not v)
        raise PlannerInputError(f"missing {missing}; e.g. plan --model 13b --gpus a100-40g:8, or --buy to choose GPUs (plan --help for all options)")
    from planner import report
    from planner.api import plan
    from planner.catalog import load_catalog

    fmt = report.Format.JSON if as_json else _format(output_format)
    result = plan(
        model,
        gpus,
        seq_len=seq_len,
        global_batch=global_batch,
        mode=mode,
        context=context,
        batch=batch,
        maximize=maximize,
        lora_rank=lora_rank,
        lora_targets=lora_targets,
        weight_format=weight_format,
        kv_dtype=kv_dtype,
        precision=precision,
        optimizer=optimizer,
        recompute=recompute,
        tp=tp,
        dp=dp,
        zero=zero,
        micro_batch=micro_batch,
        pp=pp,
        vpp=vpp,
        sp=sp,
        cp=cp,
        offload=offload,
        ep=ep,
        dp_shard=dp_shard,
        objective=minimize,
        buy=buy,
        tokens=tokens,
        budget=budget,
        deadline=deadline,
        top=top,
        diverse=diverse,
        accounting=accounting,
        attention=attention,
        loss=loss,
        framework=framework,
        compile=compile,
        margin=margin,
        overhead_gib=overhead_gib,
        fragmentation_pct=fragmentation_pct,
        time_limit_s=time_limit,
        catalog=load_catalog(catalog or ()),
        explain=explain,
    )
    _emit(result, fmt, plot, output, breakdown=breakdown)


def _emit(result, fmt, plot: Path | None, output: Path | None = None, preface: str | None = None, breakdown: bool = False) -> None:
    """Print the plan, draw it if asked, and exit 0 when something fits, 1 otherwise."""
    from planner import report

    text = report.render(result, fmt, breakdown).rstrip("\n")
    if preface:
        text = f"{preface}\n{text}"
    if output is None:
        typer.echo(text)
    else:
        try:
            output.write_text(text + "\n")
        except OSError as err:
            raise PlannerInputError(f"cannot write --output {output}: {err.strerror or err}") from None
        typer.echo(f"wrote {output}", err=True)
    if plot is not None:
        from planner.plot import save_plot

        typer.echo(f"plot: {save_plot(result, plot)}", err=True)
    raise typer.Exit(0 if result.fits else 1)


def _format(name: str) -> report.Format:  # noqa: F821 - imported lazily for start-up time
    from planner import report
    from planner.errors import unknown_name

    try:
        return report.Format(name)
    except ValueError:
        raise unknown_name("--format", name, [f.value for f in report.Format]) from None


@app.command("run")
def run_file(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="a scenario TOML (see scenarios/)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON document")] = False,
    output_format: Annotated[str, typer.Option("--format", help="table, json, csv or markdown")] = "table",
    output: Annotated[Path | None, typer.Option(help="write the output to this file instead of the terminal")] = None,
    plot: Annotated[Path | None, typer.Option(help="also draw the plans to this PNG (needs matplotlib)")] = None,
) -> None:
    """Solve a saved planning problem."""
    from planner import report
    from planner.scenario import load_scenario, run_scenario

    fmt = report.Format.JSON if as_json else _format(output_format)
    scenario = load_scenario(path)
    result = run_scenario(scenario, tuple(ctx.obj or ()))
    preface = f"scenario: {scenario.name}" + (f" ({scenario.description})" if scenario.description else "")
    _emit(result, fmt, plot, output, preface if fmt in (report.Format.TABLE, report.Format.MARKDOWN) else None)


@app.command("gpus")
def list_gpus(
    ctx: typer.Context,
    min_memory_gib: Annotated[float, typer.Option(help="only GPUs with at least this much usable memory")] = 0.0,
    priced: Annotated[bool, typer.Option("--priced", help="only GPUs with an on-demand price")] = False,
    calibrated: Annotated[bool, typer.Option("--calibrated", help="only GPUs whose speed is fitted to published runs")] = False,
) -> None:
    """List the GPU catalog: ids, usable memory, 16-bit TFLOPS, efficiency, price, aliases."""
    from planner.catalog import load_catalog
    from planner.specs import DEFAULT_MATMUL_EFFICIENCY

    for g in load_catalog(ctx.obj or ()).gpus:
        fitted = g.matmul_efficiency != DEFAULT_MATMUL_EFFICIENCY
        if g.usable_memory_bytes < min_memory_gib * 2**30 or (priced and g.price is None) or (calibrated and not fitted):
            continue
        price = f"${g.price.usd_per_hour:.2f}/h ({g.price.provider}, {g.price.date})" if g.price else "no price"
        eff = f"eff {g.matmul_efficiency:.2f}{'' if fitted else '?'}"
        typer.echo(f"{g.id:14} {g.usable_memory_bytes / 2**30:6.1f} GiB  {g.bf16_tflops or g.fp16_tflops:7.1f} TFLOPS 16-bit  {eff:9}  "
                   f"{price:34}  aliases: {', '.join(g.aliases)}")


@app.command("models")
def list_models(
    ctx: typer.Context,
    family: Annotated[str | None, typer.Option(help="only this family (llama, qwen, mixtral, gpt, ...)")] = None,
    min_params: Annotated[str | None, typer.Option(help="only models with at least this many parameters, e.g. 7B")] = None,
    max_params: Annotated[str | None, typer.Option(help="only models with at most this many parameters, e.g. 70B")] = None,
) -> None:
    """List the model catalog: ids, parameters, default sequence length, aliases."""
    from planner.architecture import param_counts
    from planner.catalog import load_catalog
    from planner.units import parse_count

    lo = parse_count("--min-params", min_params) if min_params else 0
    hi = parse_count("--max-params", max_params) if max_params else None
    for m in load_catalog(ctx.obj or ()).models:
        n = param_counts(m).total
        if (family and family.lower() not in m.family.lower()) or n < lo or (hi is not None and n > hi):
            continue
        moe = f"  MoE {m.moe.num_experts}x top-{m.moe.top_k}" if m.moe else ""
        typer.echo(f"{m.id:16} {n / 1e9:8.2f}B  seq {m.default_seq_len:6}{moe}  aliases: {', '.join(m.aliases)}")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: maps every failure to one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    try:
        rc = app(args, prog_name="plan", standalone_mode=False)
    except PlannerInputError as e:
        typer.echo(f"error: {e}", err=True)
        return 2
    except Exception as e:
        if _is_usage_error(e):
            typer.echo(f"error: {e.format_message()} (plan --help lists the options)", err=True)
            return 2
        if os.environ.get("PLANNER_DEBUG"):
            raise
        typer.echo(f"internal error: {type(e).__name__}: {e}; rerun with PLANNER_DEBUG=1 and report it with the command line", err=True)
        return 3
    return rc if isinstance(rc, int) else 0


def _is_usage_error(e: Exception) -> bool:
    """A bad flag or value caught by the parser (click's or typer's vendored UsageError: exit code 2)."""
    return callable(getattr(e, "format_message", None)) and getattr(e, "exit_code", None) == 2


def entry() -> None:
    sys.exit(main())
