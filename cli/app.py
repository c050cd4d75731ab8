"""``jacal``: measure how sensitive trained classifiers are to their input.

A thin typer layer: every command parses options, calls the library, and prints a summary
(or JSON with ``--json``). Errors are one line on stderr with exit code 1.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from jacal.loop import LOOP_PRESETS, LoopCallbacks, run_loop
from jacal.pipeline import acquire_batch, confidence_file, score_file, train_checkpoint
from jacal.replication import PRESETS, Callbacks, run_replication
from jacal.replication.report import statistic_text
from ._common import JacalGroup, LazyProgress, emit_json, fail, progress_bar, warn
from ._options import (FITTED_HELP, Activation, AddressOpt, Arch, BackendName, BackendOpt, BatchFormat, ChannelsOpt,
                       ConfMethod, DataRootOpt, DatasetName, DeviceOpt, DownloadOpt, ForceOutOpt, Format, FromNameOpt,
                       ImageSizeOpt, JsonOpt, LabelNamesOpt, LoopPreset, Method, ModelOpt, Optimizer, Output, Preset,
                       RowFormat, Split, Strategy, ToNameOpt, strategy_list)

app = typer.Typer(
    name="jacal",
    cls=JacalGroup,
    help="Input-output sensitivity of trained classifiers: per-point Jacobian norms and linear-region "
         "transitions (Novak et al. 2018), the paper's replication, and Jacobian-based active learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Checkpoint file to write.")] = Path("runs/model.pt"),
    dataset: Annotated[DatasetName, typer.Option(help="Dataset to train on ('digits' works offline).")] = "digits",
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    n_train: Annotated[Optional[int], typer.Option(help="Use a seeded random subset of the training set.")] = None,
    width: Annotated[int, typer.Option(help="Hidden units per layer.")] = 256,
    depth: Annotated[int, typer.Option(help="Hidden layers.")] = 2,
    activation: Annotated[Activation, typer.Option(help="Hidden activation.")] = "relu",
    weight_variance: Annotated[float, typer.Option(help="Init: weights ~ N(0, v / fan_in).")] = 2.0,
    optimizer: Annotated[Optimizer, typer.Option(help="Optimizer.")] = "adam",
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size; 0 = full batch.")] = 64,
    epochs: Annotated[float, typer.Option(help="Passes over the training set.")] = 30,
    seed: Annotated[int, typer.Option(help="Seeds initialization and data order.")] = 0,
    device: DeviceOpt = "auto",
    force: Annotated[bool, typer.Option(help="Overwrite an existing checkpoint.")] = False,
    pool: Annotated[Optional[Path], typer.Option(exists=True, help="Train on annotated items instead of --dataset: the pool the "
                                                      "--labels name (array file, image folder or .csv/.jsonl "
                                                      "manifest, as for `jacal acquire`).")] = None,
    labels: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False, help="Annotations of --pool items: a Label Studio JSON export, an "
                                                        "Argilla export (records.to_json) or a CSV with 'id' and "
                                                        "'label' columns. No held-out split: test metrics are not "
                                                        "reported.")] = None,
    label_names: Annotated[Optional[str], typer.Option(help="With --labels: class names in class-index order, "
                                                            "comma-separated (stored in the checkpoint for `jacal "
                                                            "acquire`); default: the labels are class indices 0..K-1.")] = None,
    from_name: FromNameOpt = "label",
    image_size: Annotated[Optional[List[int]], typer.Option(help="With an image --pool: resize to H W (or one size for "
                                                                 "square); default: the first image's size.")] = None,
    channels: Annotated[Optional[int], typer.Option(help="With an image --pool: 1 (grayscale) or 3 (RGB); default: "
                                                         "from the first image.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a fully-connected classifier on a dataset, or on annotated pool items (--pool with
    --labels from a labeling tool's export), and save a checkpoint."""
    source = f"labels:{labels.name}" if labels is not None and pool is not None else DatasetName(dataset).value
    with progress_bar(f"training on {source}", 1, enabled=not json_out) as update:
        meta = train_checkpoint(out, dataset=DatasetName(dataset).value, data_root=data_root, download=download,
                                n_train=n_train, pool=pool, labels=labels, label_names=label_names, from_name=from_name,
                                image_size=image_size, channels=channels, width=width, depth=depth,
                                activation=Activation(activation).value, weight_variance=weight_variance,
                                optimizer=Optimizer(optimizer).value, lr=lr, batch_size=batch_size, epochs=epochs,
                                seed=seed, device=device, force=force, progress=update, on_warning=warn)
    m = meta["metrics"]
    if json_out:
        emit_json(meta)
    elif "source" in meta:
        typer.echo(f"saved {out}: train acc {m['train_accuracy']:.4f} on {meta['source']['n_labeled']} labeled items "
                   f"(no held-out split, so no test accuracy; {m['steps']} steps, {m['wall_time_s']:.1f}s)")
    else:
        typer.echo(f"saved {out}: train acc {m['train_accuracy']:.4f}, test acc {m['test_accuracy']:.4f}, "
                   f"gap {m['gap']:.4f} ({m['steps']} steps, {m['wall_time_s']:.1f}s)")


@app.command()
def score(
    checkpoint: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A checkpoint written by `jacal train` (or a TorchScript / torch.export .pt2 file, with --input).")],
    dataset: Annotated[Optional[DatasetName], typer.Option(help="Score a dataset split (default: the checkpoint's dataset).")] = None,
    split: Annotated[Split, typer.Option(help="The dataset split to score.")] = "test",
    data_root: DataRootOpt = None,
    input_file: Annotated[Optional[Path], typer.Option("--input", exists=True, dir_okay=False, help="Score points from a .npy, .npz (array 'x', optional 'ids') or .pt file instead.")] = None,
    output: Annotated[Output, typer.Option(help="Differentiate the softmax (the paper's metric), logits or log-softmax.")] = "softmax",
    method: Annotated[Method, typer.Option(help="'auto' picks the fastest exact method.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Points per chunk (bounds memory).")] = 1024,
    device: DeviceOpt = "auto",
    out: Annotated[Optional[Path], typer.Option(help="Write per-point scores here (.csv or .json).")] = None,
    fmt: Annotated[Optional[Format], typer.Option("--format", help="Output format (default: from --out's suffix).")] = None,
    force: ForceOutOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Per-point Jacobian Frobenius norms of a trained model, with a summary line."""
    with progress_bar("scoring", 0, enabled=not json_out) as update:
        summary = score_file(checkpoint, dataset=DatasetName(dataset).value if dataset is not None else None,
                             split=Split(split).value, data_root=data_root, input_file=input_file, output=Output(output).value,
                             method=Method(method).value, batch_size=batch_size, device=device, out=out,
                             fmt=fmt.value if fmt is not None else None, force=force, progress=update)
    if json_out:
        emit_json(summary)
    else:
        extra = f", accuracy {summary['accuracy']:.4f}" if "accuracy" in summary else ""
        typer.echo(f"scored {summary['n']} points ({summary['source']}): mean ‖J‖_F {summary['mean']:.4g}, median "
                   f"{summary['median']:.4g}, max {summary['max']:.4g}{extra}" + (f" -> {out}" if out else ""))


def _claims_table(report: dict):
    """One screen: a row per claim with its statistic, p, n and verdict."""
    from rich.table import Table

    table = Table(title=f"Novak et al. 2018 · preset {report['preset']['name']} · {report['n_models']} models")
    for col in ("claim", "the paper", "our statistic", "95% CI", "p", "n", "verdict"):
        table.add_column(col, no_wrap=col in ("claim", "p", "n"))
    colour = {"replicated": "green", "not replicated": "red", "inconclusive": "yellow"}
    for c in report["claims"]:
        stat, ci, p = statistic_text(c["statistic"])
        table.add_row(c["id"], c["short"], stat, ci, p, str(c["statistic"].get("n", "–")),
                      f"[{colour[c['verdict']]}]{c['verdict']}[/]")
    return table


@app.command()
def replicate(
    preset: Annotated[Preset, typer.Option(help="'smoke' (digits, offline, a few minutes on a CPU), 'standard' (MNIST; "
                                                "CPU under an hour) or 'paper' (four datasets, thousands of models; GPU).")] = "smoke",
    dataset: Annotated[Optional[List[DatasetName]], typer.Option(help="Override the preset's datasets (repeatable).")] = None,
    data_root: DataRootOpt = None,
    download: Annotated[bool, typer.Option(help="Allow torchvision to download missing datasets.")] = False,
    groups: Annotated[Optional[int], typer.Option(help="Architecture groups per dataset (overrides the preset).")] = None,
    models_per_group: Annotated[Optional[int], typer.Option(help="Models per group (overrides the preset).")] = None,
    pairs: Annotated[Optional[int], typer.Option(help="C3 pairs per factor (overrides the preset).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps per model (overrides the preset).")] = None,
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
                          ("--steps", steps)):
        if value is not None and value < 1:
            fail(f"{option} must be a positive integer, got {value}")
    overrides = {"n_groups": groups, "models_per_group": models_per_group, "pairs_per_factor": pairs, "steps": steps}
    if steps is not None:
        overrides["full_batch_steps"] = min(steps, PRESETS[Preset(preset).value].full_batch_steps)
    datasets = [DatasetName(d).value for d in dataset] if dataset else None
    lazy = LazyProgress(enabled=not json_out)
    prog = lazy.progress
    models_task = prog.add_task("models", total=None)
    group_task = prog.add_task("group", total=None)

    def on_plan(total: int, done: int) -> None:
        lazy.start()  # only once the inputs are validated
        prog.update(models_task, total=total, completed=done)

    cb = Callbacks(
        on_plan=on_plan,
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
        from rich.console import Console

        console = Console()
        console.print(_claims_table(report))
        for c in report["claims"]:
            if c["verdict"] != "replicated":
                console.print(f"  {c['id']}: {c['verdict']} — {c['reason']}", highlight=False)
        typer.echo(f"report: {out / 'report.md'} (figures and protocol), {out / 'report.json'}, {out / 'results.sqlite'} "
                   f"({time.perf_counter() - started:.0f} s)")


@app.command()
def acquire(
    model: ModelOpt,
    pool: Annotated[Path, typer.Option(exists=True, help="Unlabeled items: .npy, .npz (array 'x', optional 'ids'), .pt, a folder of "
                                            "PNG/JPEG images (nested class folders too; ids = relative paths), or a "
                                            "manifest (.csv or .jsonl with 'id' and 'path'/'uri': local paths, relative "
                                            "to the manifest, or file:// URIs). Images are decoded batch by batch; "
                                            "unreadable files are skipped with a warning.")],
    k: Annotated[int, typer.Option(help="How many items to select.")],
    out: Annotated[Path, typer.Option(help="Batch file to write: .csv or .jsonl (id, rank, score, predicted, confidence), "
                                           "or .json with --format label-studio / argilla (tasks with the model's "
                                           "prediction as a pre-annotation).")],
    strategy: Annotated[Strategy, typer.Option(help="Acquisition strategy. 'jacobian' (default): k-means++ over "
                                                    "first-order distances to the decision boundary and their "
                                                    "directions (sensitive and spread out); 'jacobian-topk': the "
                                                    "highest Jacobian norms (the paper's score, batch-blind).")] = "jacobian",
    exclude: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False, help="Items already labeled or queued, never selected: a Label Studio "
                                                         "JSON export, an Argilla export (records.to_json), a CSV with an "
                                                         "'id' (and 'label') column, or one id per line.")] = None,
    fmt: Annotated[Optional[BatchFormat], typer.Option("--format", help="Output format: csv, jsonl, label-studio (task "
                                                                        "import JSON) or argilla (record JSON); default: "
                                                                        "from --out's suffix.")] = None,
    label_names: LabelNamesOpt = None,
    from_name: FromNameOpt = "label",
    to_name: ToNameOpt = "image",
    model_version: Annotated[Optional[str], typer.Option(help="Label Studio model_version / Argilla agent of the "
                                                              "predictions (default: the checkpoint's metadata, else "
                                                              "its file name).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds tie-breaking, sampling and MC dropout.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Items per chunk (bounds memory).")] = 256,
    mc_samples: Annotated[int, typer.Option(help="MC-dropout samples for --strategy bald.")] = 20,
    embedding_layer: Annotated[Optional[str], typer.Option(
        help="coreset/badge: the layer whose output embeds each item, named as in model.named_modules() (TorchScript: "
             "a top-level layer, Sequential containers opened, e.g. 'body.2'; .pt2: the module path recorded in the "
             "graph). Default: the input of the model's last linear layer.")] = None,
    image_size: ImageSizeOpt = None,
    channels: ChannelsOpt = None,
    device: DeviceOpt = "auto",
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    shard_size: Annotated[int, typer.Option(help="Ray: pool items per task (a .npy pool is memory-mapped and read shard by "
                                                 "shard; image files must be at the same paths on every worker).")] = 65536,
    force: ForceOutOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Choose the next K pool items for annotators to label, and write them as a batch file or as
    Label Studio / Argilla tasks.

    Items with NaN/Inf values or unreadable files are reported by id and never selected; --exclude
    ids are never selected and anchor the diversity strategies (coreset).
    """
    notes: List[str] = []
    with progress_bar(f"scoring ({Strategy(strategy).value})", 0, enabled=not json_out) as update:
        summary = acquire_batch(model, pool, k, out, fmt=fmt.value if fmt is not None else None,
                                strategy=Strategy(strategy).value, exclude=exclude, label_names=label_names,
                                from_name=from_name, to_name=to_name, model_version=model_version, seed=seed,
                                batch_size=batch_size, device=device, mc_samples=mc_samples,
                                embedding_layer=embedding_layer, image_size=image_size, channels=channels,
                                backend=BackendName(backend).value, address=address, shard_size=shard_size, force=force,
                                progress=update, on_warning=notes.append)
    for line in notes:  # after the progress bar has gone
        warn(line)
    if json_out:
        emit_json(summary)
    else:
        typer.echo(f"selected {summary['k']} of {summary['pool']} items with {summary['strategy']} -> {out} "
                   f"({summary['excluded']} excluded, {len(summary['invalid'])} invalid)")


@app.command()
def confidence(
    model: ModelOpt,
    data: Annotated[Path, typer.Option(exists=True, help="Items to score: .npy, .npz, .pt, a folder of images or a "
                                                         "manifest (.csv or .jsonl).")],
    labels: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False, help="True labels of --data (.npy or one integer per line): adds metrics.")] = None,
    method: Annotated[Optional[ConfMethod], typer.Option(help="Confidence estimator (default max_softmax, or the --estimator "
                                                              "file's). Fitted ones need --fit-data: " + FITTED_HELP + ".")] = None,
    fit_data: Annotated[Optional[Path], typer.Option(exists=True, help="Items a fitted method learns from: a held-out split, or the "
                                                          "training items for mahalanobis and knn.")] = None,
    fit_labels: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False, help="Labels of --fit-data (all fitted methods but knn and "
                                                            "jacobian_residual need them).")] = None,
    estimator: Annotated[Optional[Path], typer.Option(help="A fitted estimator written by --save-estimator: its method and "
                                                           "state, checked against --model's weights.")] = None,
    save_estimator: Annotated[Optional[Path], typer.Option(help="Write the fitted estimator here (e.g. beside the model) "
                                                                "to score later batches with --estimator.")] = None,
    review_below: Annotated[Optional[float], typer.Option(help="Flag items whose confidence is below this for human review.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Per-item file (.csv or .jsonl): id, predicted, confidence[, review].")] = None,
    fmt: Annotated[Optional[RowFormat], typer.Option("--format", help="Output format (default: from --out's suffix).")] = None,
    image_size: ImageSizeOpt = None,
    channels: ChannelsOpt = None,
    device: DeviceOpt = "auto",
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out or --save-estimator file.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Per-item confidence of a model's predictions, and failure-detection metrics when labels are given."""
    summary = confidence_file(model, data, labels=labels, method=ConfMethod(method).value if method is not None else None,
                              fit_data=fit_data, fit_labels=fit_labels, estimator=estimator,
                              save_estimator=save_estimator, review_below=review_below, out=out,
                              fmt=fmt.value if fmt is not None else None, image_size=image_size, channels=channels,
                              device=device, force=force, on_warning=warn)
    if json_out:
        emit_json(summary)
    else:
        line = f"scored {summary['n']} items with {summary['method']}: mean confidence {summary['mean_confidence']:.4f}"
        if "metrics" in summary:
            mt = summary["metrics"]
            line += (f"; accuracy {mt['accuracy']:.4f}, failure AUROC {mt['failure_auroc']:.4f}, AURC {mt['aurc']:.4f}, "
                     f"FPR@95%TPR {mt['fpr_at_95_tpr']:.4f}" + (f", ECE {mt['ece']:.4f}" if "ece" in mt else ""))
        if review_below is not None:
            line += f"; {summary['to_review']} below {review_below} for review"
        if save_estimator is not None:
            line += f"; estimator saved to {save_estimator}"
        typer.echo(line + (f" -> {out}" if out else ""))


@app.command()
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
    model: Annotated[Optional[Arch], typer.Option(hidden=True, help="Deprecated: --arch.")] = None,
    warm_start: Annotated[bool, typer.Option(help="Continue training the previous round's model instead of a fresh one.")] = False,
    max_epochs: Annotated[Optional[int], typer.Option(help="Epoch cap per round (early stopping on validation).")] = None,
    pool_size: Annotated[Optional[int], typer.Option(help="Cap the unlabeled pool at this many training items (per seed, a random subset).")] = None,
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
    if model is not None:  # loop's --model named the architecture, elsewhere --model is a checkpoint
        typer.echo("warning: `jacal loop --model` is deprecated, use --arch (--model names a checkpoint elsewhere)",
                   err=True)
        arch = arch if arch is not None else model
    base = LOOP_PRESETS[LoopPreset(preset).value]
    changes = {name: v for name, v in (("initial", initial), ("k", k), ("rounds", rounds), ("seeds", seeds),
                                       ("model", Arch(arch).value if arch is not None else None),
                                       ("max_epochs", max_epochs), ("pool_size", pool_size))
               if v is not None}
    if dataset is not None:
        changes["dataset"] = DatasetName(dataset).value
    if strategies is not None:
        changes["strategies"] = strategies  # a tuple of names (strategy_list)
    if warm_start:
        changes["warm_start"] = True
    cfg = replace(base, **changes)
    lazy = LazyProgress(enabled=not json_out)
    prog = lazy.progress
    task = prog.add_task("rounds", total=None)

    def on_start(total: int, done: int) -> None:
        lazy.start()
        prog.update(task, total=total, completed=done)

    cb = LoopCallbacks(on_start=on_start, on_run=lambda s, seed: prog.update(task, description=f"{s} · seed {seed}"),
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
                   "pointwise_check_c4": summary["pointwise_check_c4"]})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{cfg.dataset}: {cfg.initial} labels +{cfg.k}×{cfg.rounds}, {cfg.seeds} seeds")
    for col in ("strategy", "AULC [95% CI]", "final acc.", "vs random", "vs best baseline"):
        table.add_column(col)
    for s in summary["ranking"]:
        d = summary["strategies"][s]
        a = d["aulc"]
        ci = f" [{a['ci_low']:.3f}, {a['ci_high']:.3f}]" if a.get("ci_low") is not None else ""
        vr, vb = d.get("vs_random"), d.get("vs_best_baseline")
        table.add_row(s, f"{a['mean']:.3f}{ci}", f"{d['final_accuracy']['mean']:.3f}",
                      "–" if not vr else f"{vr['verdict']} ({vr['mean_difference']:+.3f})",
                      "–" if not vb else f"{vb['verdict']} vs {vb['baseline']}")
    Console().print(table)
    c4 = summary["pointwise_check_c4"]
    if c4:
        typer.echo(f"C4 check (first model): ρ(‖J‖, loss) = {c4['spearman_rho_jacobian_loss']:.3f}, "
                   f"error AUROC of ‖J‖ = {c4['error_auroc_jacobian']}")
    typer.echo(f"report: {out / 'report.md'}, {out / 'curves.png'}, {out / 'curves.csv'}, {out / 'summary.json'}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
