"""`jacal replicate`: the replication of Novak et al. 2018, with its claims table."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from jacal.replication import PRESETS, Callbacks, run_replication
from jacal.replication.report import statistic_text
from ._common import LazyProgress, emit_json, fail, stdout_console
from ._options import AddressOpt, BackendName, BackendOpt, DataRootOpt, DatasetName, DeviceOpt, JsonOpt, Preset


def _claims_table(report: dict):
    """One screen: a row per claim with its statistic, p, n and verdict."""
    from rich.table import Table

    table = Table(title=f"Novak et al. 2018 · preset {report['preset']['name']} · {report['n_models']} models")
    for col in ("claim", "the paper", "our statistic", "95% CI", "p", "n", "verdict"):
        table.add_column(col, no_wrap=col in ("claim", "p", "n"))
    colour = {"replicated": "green", "not replicated": "red", "inconclusive": "yellow", "not tested": "blue"}
    for c in report["claims"]:
        stat, ci, p = statistic_text(c["statistic"])
        table.add_row(c["id"], c["short"], stat, ci, p, str(c["statistic"].get("n", "–")),
                      f"[{colour[c['verdict']]}]{c['verdict']}[/]")
    return table


def replicate(
    preset: Annotated[Preset, typer.Option(help="'smoke' (digits, offline, about two minutes on a CPU), 'standard' (MNIST; "
                                                "CPU under half an hour), 'c6' (MNIST, widths 4-2048: the C6 test) or "
                                                "'paper' (four datasets, thousands of models; GPU).")] = "smoke",
    dataset: Annotated[Optional[List[DatasetName]], typer.Option(help="Override the preset's datasets (repeatable).")] = None,
    data_root: DataRootOpt = None,
    download: Annotated[bool, typer.Option(help="Allow torchvision to download missing datasets.")] = False,
    groups: Annotated[Optional[int], typer.Option(help="Architecture groups per dataset (overrides the preset).")] = None,
    models_per_group: Annotated[Optional[int], typer.Option(help="Models per group (overrides the preset).")] = None,
    pairs: Annotated[Optional[int], typer.Option(help="C3 pairs per factor (overrides the preset).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps per model, the C2 experiment's included (overrides the preset).")] = None,
    c2_seeds: Annotated[Optional[int], typer.Option(help="C2 experiment: models per architecture (overrides the preset).")] = None,
    c2_ellipses: Annotated[Optional[int], typer.Option(help="C2 experiment: fresh ellipses of each kind (overrides the preset; the paper-like test wants ≥ 20).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the whole sweep (configs, inits, data order, subsets).")] = 0,
    device: DeviceOpt = "auto",
    out: Annotated[Path, typer.Option(help="Output folder: results.sqlite, report.json, report.md, figures.")] = Path("runs/replicate"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out (same preset, datasets and seed).")] = False,
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    gpus_per_group: Annotated[Optional[float], typer.Option(help="Ray: num_gpus per group task (fractions share a GPU); default 1 on CUDA, else 0.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train populations of fully-connected models and check every claim (C1–C6) of Novak et al. 2018.

    Writes results.sqlite (one row per model, written as groups finish; rerun with --resume after a
    crash), report.json, report.md and PNG figures into --out, and prints the claims table.
    """
    started = time.perf_counter()
    for option, value in (("--groups", groups), ("--models-per-group", models_per_group), ("--pairs", pairs),
                          ("--steps", steps), ("--c2-seeds", c2_seeds), ("--c2-ellipses", c2_ellipses)):
        if value is not None and value < 1:
            fail(f"{option} must be a positive integer, got {value}")
    overrides = {"n_groups": groups, "models_per_group": models_per_group, "pairs_per_factor": pairs, "steps": steps,
                 "c2_seeds": c2_seeds, "c2_ellipses": c2_ellipses}
    if steps is not None:
        overrides["full_batch_steps"] = min(steps, PRESETS[Preset(preset).value].full_batch_steps)
        overrides["c2_steps"] = steps
    datasets = [DatasetName(d).value for d in dataset] if dataset else None
    lazy = LazyProgress(enabled=not json_out)
    prog = lazy.progress
    models_task = prog.add_task("models", total=None)
    group_task = prog.add_task("group", total=None)

    cb = Callbacks(
        on_plan=lambda total, done: lazy.begin(models_task, total, done),  # once the inputs are validated
        on_group_start=lambda desc, n: prog.update(group_task, description=desc, total=n, completed=0),
        on_step=lambda step, total: prog.update(group_task, completed=step),
        on_group_done=lambda n: prog.advance(models_task, n),
        on_phase=lambda text: prog.update(group_task, description=text, total=None, completed=0),
    )
    try:
        report = run_replication(out, preset=Preset(preset).value, datasets=datasets, seed=seed, device=device,
                                 data_root=data_root, download=download, resume=resume, overrides=overrides, callbacks=cb,
                                 backend=BackendName(backend).value, address=address, gpus_per_group=gpus_per_group)
    finally:
        lazy.stop()
    if json_out:
        emit_json({"out": str(out), "claims": [{k: c[k] for k in ("id", "verdict", "reason", "statistic")}
                                                for c in report["claims"]], "exclusions": report["exclusions"],
                   "wall_s": round(time.perf_counter() - started, 1)})
    else:
        console = stdout_console()
        console.print(_claims_table(report))
        for c in report["claims"]:
            if c["verdict"] != "replicated":
                console.print(f"  {c['id']}: {c['verdict']} — {c['reason']}", highlight=False)
        typer.echo(f"report: {out / 'report.md'} (figures and protocol), {out / 'report.json'}, {out / 'results.sqlite'} "
                   f"({time.perf_counter() - started:.0f} s)")
