"""`jacal loop`: simulated active learning, strategies compared on learning curves."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from jacal._internal.stats import fmt
from jacal.io import parse_label_names
from jacal.loop import LOOP_PRESETS, LoopCallbacks, run_loop
from jacal.loop.source import LabeledSource, data_text
from jacal.scenarios import parse_params
from ._common import LazyProgress, emit_json, fail, stdout_console
from ._options import (ANNOTATION_FILES_HELP, AddressOpt, Arch, BackendName, BackendOpt, DataRootOpt, DatasetName,
                       DeviceOpt, DownloadOpt, FromNameOpt, JsonOpt, LoopPreset, Strategy, strategy_list)


def loop(
    preset: Annotated[LoopPreset, typer.Option(help="'smoke' (digits, all strategies, 3 seeds, minutes on a CPU), "
                                                    "'mnist-gal' (Gal et al. 2017: 20 labels +10 per round), "
                                                    "'mnist-batch100' (+100 per round).")] = "smoke",
    dataset: Annotated[Optional[DatasetName], typer.Option(help="Override the preset's dataset.")] = None,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    strategies: Annotated[Optional[str], typer.Option(metavar="NAME[,NAME...]", callback=strategy_list,
                                                      help="Comma-separated strategies (default: all): "
                                                           + ", ".join(s.value for s in Strategy) + ".")] = None,
    initial: Annotated[Optional[int], typer.Option(help="Labeled items before the first round.")] = None,
    k: Annotated[Optional[int], typer.Option(help="Items acquired per round.")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="Acquisition rounds.")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Independent repetitions (paired across strategies).")] = None,
    arch: Annotated[Optional[Arch], typer.Option(help="The architecture trained each round.")] = None,
    warm_start: Annotated[bool, typer.Option(help="Continue training the previous round's model instead of a fresh one.")] = False,
    max_epochs: Annotated[Optional[int], typer.Option(help="Epoch cap per round (early stopping on validation).")] = None,
    pool_size: Annotated[Optional[int], typer.Option(help="Cap the unlabeled pool at this many training items (per seed, a random subset).")] = None,
    scenario: Annotated[Optional[str], typer.Option(
        help="The pool as a team has it (jacal.scenarios): 'clean', 'open-set' (items annotators cannot label: "
             "unseen classes and junk; they cost a label and are answered 'none of these'), 'long-tail', 'repeated' "
             "(noisy copies), 'embedding' (a frozen PCA embedding; --depth 0 for a linear head), 'image3' "
             "(3x32x32 images).")] = None,
    scenario_params: Annotated[Optional[str], typer.Option(
        metavar="NAME=NUMBER[,...]", help="The scenario's parameters, e.g. 'share=0.4,junk=0.25' (open-set), "
                                          "'ratio=10' (long-tail), 'copies=3,noise=0.1' (repeated), 'dim=64' "
                                          "(embedding).")] = None,
    cold_start: Annotated[Optional[str], typer.Option(
        help="With --initial 0, how the first batch is chosen: 'typiclust' (default), 'kmeans++' or 'random' "
             "(the random strategy always draws at random).")] = None,
    depth: Annotated[Optional[int], typer.Option(help="Hidden layers of the MLP (0: a linear model).")] = None,
    pool: Annotated[Optional[Path], typer.Option(help="Simulate on a team's own data instead of --dataset: the pool "
                                                      "the --labels name (array file, image folder or .csv/.jsonl "
                                                      "manifest, as for `jacal acquire`). Only labeled items take "
                                                      "part.", exists=True)] = None,
    labels: Annotated[Optional[List[Path]], typer.Option(
        help="With --pool: annotations of its items, whose labels the simulation reveals round by round; a fixed "
             "test split (--n-test) is cut from them, the rest is split per seed into validation and pool. Items "
             "answered 'none of these' stay in the pool as items outside the label set (picking one costs a label, "
             "it is never trained on); ids not in the pool, unreadable items and queued ids are left out and "
             "counted in summary.json. " + ANNOTATION_FILES_HELP, exists=True, dir_okay=False)] = None,
    label_names: Annotated[Optional[str], typer.Option(help="With --labels: class names in class-index order, "
                                                            "comma-separated; default: the labels as class indices "
                                                            "when they all are, else in sorted order.")] = None,
    from_name: FromNameOpt = "label",
    image_size: Annotated[Optional[List[int]], typer.Option(help="With an image --pool: resize to H W (or one size for "
                                                                 "square); default: the first image's size.")] = None,
    channels: Annotated[Optional[int], typer.Option(help="With an image --pool: 1 (grayscale) or 3 (RGB); default: "
                                                         "from the first image.")] = None,
    n_test: Annotated[Optional[int], typer.Option(help="Test items: with --labels, held out from the labeled items "
                                                       "(default: a fifth); else a seeded subset of the dataset's test "
                                                       "split.")] = None,
    val_size: Annotated[Optional[int], typer.Option(help="Validation items per seed for early stopping (never "
                                                         "labeled, never in the pool); default: the preset's.")] = None,
    device: DeviceOpt = "auto",
    out: Annotated[Path, typer.Option(help="Output folder: loop.sqlite, curves.csv, summary.json, curves.png, report.md.")] = Path("runs/loop"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted experiment in --out at each run's last finished round.")] = False,
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Simulated active learning: does choosing by Jacobian norm beat the alternatives on this data?

    Each round trains the model on the labeled set, evaluates it on the test split, acquires --k items
    with each strategy and reveals their labels; learning curves, areas under them with CIs, paired
    comparisons against random and the best baseline, and the per-point check C4 are reported.
    """
    base = LOOP_PRESETS[LoopPreset(preset).value]
    changes = {name: v for name, v in (("initial", initial), ("k", k), ("rounds", rounds), ("seeds", seeds),
                                       ("model", Arch(arch).value if arch is not None else None),
                                       ("max_epochs", max_epochs), ("pool_size", pool_size), ("scenario", scenario),
                                       ("cold_start", cold_start), ("depth", depth), ("n_test", n_test),
                                       ("val_size", val_size))
               if v is not None}
    if (pool is None) != (labels is None):
        fail("--pool and --labels go together: the labels name items of the pool")
    if pool is not None:
        if dataset is not None:
            fail("--dataset and --labels exclude each other: with --pool and --labels the items are your own")
        changes["source"] = LabeledSource(str(pool), tuple(str(p) for p in labels),
                                          tuple(parse_label_names(label_names)) if label_names else None, from_name,
                                          tuple(image_size) if image_size else None, channels)
    if dataset is not None:
        changes["dataset"] = DatasetName(dataset).value
    if strategies is not None:
        changes["strategies"] = strategies  # a tuple of names (strategy_list)
    if warm_start:
        changes["warm_start"] = True
    if scenario_params is not None:
        changes["scenario_params"] = tuple(sorted(parse_params(scenario_params).items()))
    cfg = replace(base, **changes)
    lazy = LazyProgress(enabled=not json_out)
    prog = lazy.progress
    task = prog.add_task("rounds", total=None)

    cb = LoopCallbacks(on_start=lambda total, done: lazy.begin(task, total, done), on_run=lambda s, seed: prog.update(task, description=f"{s} · seed {seed}"),
                       on_round=lambda s, seed, rnd, acc: prog.advance(task))
    try:
        summary = run_loop(out, cfg, device=device, data_root=data_root, download=download, resume=resume, callbacks=cb,
                           backend=BackendName(backend).value, address=address)
    finally:
        lazy.stop()
    if json_out:
        emit_json({"out": str(out), "ranking": summary["ranking"],
                   "strategies": {s: {"aulc": d["aulc"], "final_accuracy": d["final_accuracy"],
                                      "vs_random": d.get("vs_random")} for s, d in summary["strategies"].items()},
                   "scenario": summary.get("scenario"),
                   "stopping": {s: v["over_seeds"] for s, v in (summary.get("stopping") or {}).items()},
                   "pointwise_check_c4": summary["pointwise_check_c4"],
                   **({"data": summary["data"]} if "data" in summary else {})})
        return
    from rich.table import Table

    scenario_text = f" ({cfg.scenario})" if cfg.source is None else ""
    table = Table(title=f"{cfg.data_name}{scenario_text}: {cfg.initial} labels +{cfg.k}×{cfg.rounds}, {cfg.seeds} seeds")
    sc = summary.get("scenario") or {}
    wasted = any((d["wasted_share"]["mean"] or 0) > 0 for d in sc.values())
    for col in ("strategy", "AULC [95% CI]", "final acc.", "vs random", "vs best baseline") + (
            ("labels wasted",) if wasted else ()):
        table.add_column(col)
    for s in summary["ranking"]:
        d = summary["strategies"][s]
        a = d["aulc"]
        ci = f" [{a['ci_low']:.3f}, {a['ci_high']:.3f}]" if a.get("ci_low") is not None else ""
        vr, vb = d.get("vs_random"), d.get("vs_best_baseline")
        table.add_row(s, f"{a['mean']:.3f}{ci}", f"{d['final_accuracy']['mean']:.3f}",
                      "–" if not vr else f"{vr['verdict']} ({vr['mean_difference']:+.3f})",
                      "–" if not vb else f"{vb['verdict']} vs {vb['baseline']}",
                      *((f"{sc[s]['wasted_share']['mean']:.0%}" if s in sc else "–",) if wasted else ()))
    stdout_console().print(table)
    if "data" in summary:
        typer.echo(data_text(summary["data"]))
    c4 = summary["pointwise_check_c4"]
    if c4:
        typer.echo(f"C4 check (first model): ρ(‖J‖, loss) = {fmt(c4['spearman_rho_jacobian_loss'])}, "
                   f"error AUROC of ‖J‖ = {fmt(c4['error_auroc_jacobian'])}")
    typer.echo(f"report: {out / 'report.md'}, {out / 'curves.png'}, {out / 'curves.csv'}, {out / 'summary.json'}")
