"""``jacal``: measure how sensitive trained classifiers are to their input.

A thin typer layer: every command parses options, calls the library, and prints a summary
(or JSON with ``--json``). Errors are one line on stderr with exit code 1.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import numpy as np
import torch
import typer


import jacal
import jacal.io as jio
from jacal._io import atomic_open
from jacal.io import load_array
from jacal.acquisition import STRATEGIES
from jacal.acquisition.strategies import RETIRED
from jacal.backends import get_backend
from jacal.checkpoint import load_model_file
from jacal.confidence import FITTED as FITTED_METHODS, METHODS as CONFIDENCE_METHODS, NEEDS_LABELS, ConfidenceEstimator
from jacal.loop import LOOP_PRESETS, LoopCallbacks, run_loop
from jacal.replication import PRESETS, Callbacks, run_replication
from jacal.replication.report import statistic_text
from ._common import JacalGroup, LazyProgress, check_writable, emit_json, fail, progress_bar

app = typer.Typer(
    name="jacal",
    cls=JacalGroup,
    help="Input-output sensitivity of trained classifiers: per-point Jacobian norms and linear-region "
         "transitions (Novak et al. 2018), the paper's replication, and Jacobian-based active learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DatasetName = Enum("DatasetName", {k.replace("-", "_"): k for k in jacal.DATASETS}, type=str)
Activation = Enum("Activation", {k: k for k in jacal.models.ACTIVATIONS}, type=str)
Optimizer = Enum("Optimizer", {k: k for k in jacal.training.OPTIMIZERS}, type=str)
Output = Enum("Output", {k: k for k in jacal.sensitivity.OUTPUTS}, type=str)
Method = Enum("Method", {k.replace("-", "_"): k for k in jacal.sensitivity.METHODS}, type=str)


class Format(str, Enum):
    csv = "csv"
    json = "json"


DeviceOpt = Annotated[str, typer.Option(help="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.")]
DataRootOpt = Annotated[Optional[Path], typer.Option(help="Folder with downloaded datasets (torchvision layout). "
                                                          "Default: $JACAL_DATA or ~/.cache/jacal/data.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]
BackendName = Enum("BackendName", {"local": "local", "ray": "ray"}, type=str)
BackendOpt = Annotated[BackendName, typer.Option(help="'local' (this process) or 'ray' (Ray tasks; needs jacal[ray]).")]
AddressOpt = Annotated[Optional[str], typer.Option(help="Ray cluster: 'auto' or 'ray://host:port' (default: start a local Ray).")]
LabelNamesOpt = Annotated[Optional[str], typer.Option(help="Class names in class-index order, comma-separated (CSV quoting "
                                                           "for names with commas). Default: the checkpoint's, else "
                                                           "0,1,...,K-1. Every label read back must be one of them.")]
FromNameOpt = Annotated[str, typer.Option(help="Label Studio: the <Choices> control's name (from_name); Argilla: the "
                                               "label question's name.")]
ToNameOpt = Annotated[str, typer.Option(help="Label Studio: the <Image> object the choices label (to_name); Argilla: "
                                             "the image field's name.")]


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Checkpoint file to write.")] = Path("runs/model.pt"),
    dataset: Annotated[DatasetName, typer.Option(help="Dataset to train on ('digits' works offline).")] = "digits",
    data_root: DataRootOpt = None,
    download: Annotated[bool, typer.Option(help="Allow torchvision to download a missing dataset.")] = False,
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
    pool: Annotated[Optional[Path], typer.Option(help="Train on annotated items instead of --dataset: the pool the "
                                                      "--labels name (array file, image folder or .csv/.jsonl "
                                                      "manifest, as for `jacal acquire`).")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="Annotations of --pool items: a Label Studio JSON export, an "
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
    check_writable(out, force)
    extra: dict = {}
    if labels is not None or pool is not None:
        if labels is None or pool is None:
            fail("--pool and --labels go together: the labels name items of the pool")
        if not pool.exists():
            fail(f"--pool not found: {pool}")
        names = jio.parse_label_names(label_names) if label_names is not None else None
        ann = jio.read_annotations(labels, question=from_name, label_names=names)
        items = jio.open_pool(pool, image_size=image_size, channels=channels, infer_image_shape=True)
        lab = jio.labeled_items(items, ann, names)
        for item, why in lab.unreadable.items():
            typer.echo(f"warning: skipped labeled item {item!r}: {why}", err=True)
        if lab.not_in_pool:
            typer.echo(f"warning: {len(lab.not_in_pool)} labeled id(s) in {labels} are not in {pool}", err=True)
        if len(lab.y) == 0:
            fail(f"{labels} labels none of the readable items of {pool}")
        data = jacal.Splits(f"labels:{labels.name}", lab.x, lab.y, lab.x[:0], lab.y[:0], len(lab.label_names))
        extra = {"label_names": lab.label_names, "source": {"pool": str(pool), "labels": str(labels),
                                                           "format": ann.tool, "n_labeled": len(lab.y)}}
    else:
        data = jacal.load_dataset(DatasetName(dataset).value, root=data_root, download=download, n_train=n_train, seed=seed)
    model = jacal.mlp(data.input_dim, data.n_classes, width=width, depth=depth, activation=Activation(activation).value,
                      weight_variance=weight_variance, seed=seed)
    with progress_bar(f"training on {data.name}", 1, enabled=not json_out) as update:
        result = jacal.train(model, data, optimizer=Optimizer(optimizer).value, lr=lr, batch_size=batch_size,
                             epochs=epochs, seed=seed, device=device, progress=update)
    metrics = {key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in result.to_dict().items()}
    meta = {"dataset": None if extra else data.name, "data_root": str(data_root) if data_root and not extra else None,
            "seed": seed, "input_shape": list(data.input_shape), "n_classes": data.n_classes,
            "train": {"optimizer": Optimizer(optimizer).value, "lr": lr, "batch_size": batch_size, "epochs": epochs},
            "metrics": metrics, **extra}
    jacal.save_checkpoint(out, model.cpu(), metadata=meta)
    if json_out:
        emit_json({"checkpoint": str(out), **meta})
    elif extra:
        typer.echo(f"saved {out}: train acc {result.train_accuracy:.4f} on {len(data.y_train)} labeled items "
                   f"(no held-out split, so no test accuracy; {result.steps} steps, {result.wall_time_s:.1f}s)")
    else:
        typer.echo(f"saved {out}: train acc {result.train_accuracy:.4f}, test acc {result.test_accuracy:.4f}, "
                   f"gap {result.gap:.4f} ({result.steps} steps, {result.wall_time_s:.1f}s)")


@app.command()
def score(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by `jacal train` (or a TorchScript / torch.export .pt2 file, with --input).")],
    dataset: Annotated[Optional[DatasetName], typer.Option(help="Score a dataset split (default: the checkpoint's dataset).")] = None,
    split: Annotated[str, typer.Option(help="'train' or 'test'.")] = "test",
    data_root: DataRootOpt = None,
    input_file: Annotated[Optional[Path], typer.Option("--input", help="Score points from a .npy, .npz (array 'x', optional 'ids') or .pt file instead.")] = None,
    output: Annotated[Output, typer.Option(help="Differentiate the softmax (the paper's metric), logits or log-softmax.")] = "softmax",
    method: Annotated[Method, typer.Option(help="'auto' picks the fastest exact method.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Points per chunk (bounds memory).")] = 1024,
    device: DeviceOpt = "auto",
    out: Annotated[Optional[Path], typer.Option(help="Write per-point scores here (.csv or .json).")] = None,
    fmt: Annotated[Optional[Format], typer.Option("--format", help="Output format (default: from --out's suffix).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Per-point Jacobian Frobenius norms of a trained model, with a summary line."""
    ck = load_model_file(checkpoint)
    if out is not None:
        check_writable(out, force)
    labels, ids = None, None
    if input_file is not None:
        x, ids = load_array(input_file)
        source = str(input_file)
    else:
        name = DatasetName(dataset).value if dataset is not None else ck.metadata.get("dataset")
        if name is None:
            fail("the checkpoint names no dataset; pass --dataset or --input")
        if split not in ("train", "test"):
            fail(f"--split must be 'train' or 'test', got {split!r}")
        data = jacal.load_dataset(name, root=data_root or ck.metadata.get("data_root"))
        x, labels = data.split(split)
        source = f"{name}/{split}"
    with progress_bar("scoring", len(x), enabled=not json_out) as update:
        norms = jacal.jacobian_norm(ck.model, x, output=Output(output).value, method=Method(method).value,
                                    batch_size=batch_size, device=device, progress=update)
    with torch.no_grad():
        pred = torch.cat([ck.model(x[i:i + 4096]).argmax(1) for i in range(0, len(x), 4096)])
    ids = ids if ids is not None else list(range(len(x)))
    summary = {"source": source, "n": len(x), "output": Output(output).value, "method": Method(method).value,
               "mean": float(norms.mean()), "median": float(norms.median()), "std": float(norms.std()) if len(x) > 1 else 0.0,
               "min": float(norms.min()), "max": float(norms.max())}
    if labels is not None:
        summary["accuracy"] = float((pred == labels).float().mean())
    if out is not None:
        kind = (fmt.value if fmt is not None else out.suffix.lstrip(".").lower())
        if kind not in ("csv", "json"):
            fail(f"cannot tell the format of {out}; pass --format csv or --format json")
        rows = [{"id": i, "jacobian_norm": float(n), "predicted": int(p)} for i, n, p in zip(ids, norms.tolist(), pred.tolist())]
        if labels is not None:
            for r, y in zip(rows, labels.tolist()):
                r["label"] = int(y)
        with atomic_open(out, "w", newline="") as f:
            if kind == "json":
                json.dump({"summary": summary, "scores": rows}, f)
            else:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        summary["out"] = str(out)
    if json_out:
        emit_json(summary)
    else:
        extra = f", accuracy {summary['accuracy']:.4f}" if "accuracy" in summary else ""
        typer.echo(f"scored {summary['n']} points ({source}): mean ‖J‖_F {summary['mean']:.4g}, median "
                   f"{summary['median']:.4g}, max {summary['max']:.4g}{extra}" + (f" -> {out}" if out else ""))


Preset = Enum("Preset", {k: k for k in PRESETS}, type=str)


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


# retired names stay accepted here so that jacal.acquire answers them with the name of their replacement
Strategy = Enum("Strategy", {k.replace("-", "_"): k for k in [*STRATEGIES, *RETIRED]}, type=str)
ConfMethod = Enum("ConfMethod", {k: k for k in CONFIDENCE_METHODS}, type=str)
_FITTED_HELP = ", ".join(f"{k} ({v})" for k, v in FITTED_METHODS.items())


class RowFormat(str, Enum):
    csv = "csv"
    jsonl = "jsonl"


class BatchFormat(str, Enum):
    csv = "csv"
    jsonl = "jsonl"
    label_studio = "label-studio"
    argilla = "argilla"


ModelOpt = Annotated[Path, typer.Option("--model", help="A jacal checkpoint (`jacal train`), a TorchScript file or a torch.export program.")]
ImageSizeOpt = Annotated[Optional[List[int]], typer.Option(help="For images (a folder or a manifest): resize to H W (or one "
                                                                "size for square); default: the checkpoint's input shape.")]
ChannelsOpt = Annotated[Optional[int], typer.Option(help="For images (a folder or a manifest): 1 (grayscale) or 3 (RGB); "
                                                         "default: the checkpoint's.")]


def _open_items(path: Path, ck, image_size, channels) -> jio.Pool:
    return jio.open_pool(path, image_size=image_size, channels=channels, input_shape=ck.metadata.get("input_shape"))


def _load_items(path: Path, ck, image_size, channels, what: str):
    """Items ``(N, ...)`` decoded in memory and their ids (for commands that need them all at once)."""
    if not path.exists():
        fail(f"{what} not found: {path}")
    pool = _open_items(path, ck, image_size, channels)
    return pool.materialize(), pool.ids


def _output_kind(out: Path, fmt, allowed=("csv", "jsonl")) -> str:
    kind = fmt.value if fmt is not None else out.suffix.lstrip(".").lower()
    if kind not in allowed:
        fail(f"cannot tell the format of {out}; pass --format {' or '.join(allowed)}")
    return kind


def _n_classes(model, input_shape) -> Optional[int]:
    """K, from one forward pass on a blank item (None when the model refuses it; acquire then reports why)."""
    try:
        with torch.no_grad():
            z = model(torch.zeros((2, *input_shape)))  # 2: exported programs may specialize a batch of 1
        return int(z.shape[1]) if isinstance(z, torch.Tensor) and z.ndim == 2 else None
    except Exception:  # noqa: BLE001 - the real pass reports the model's error in one line
        return None


def _label_names(text: Optional[str], ck, n_classes: Optional[int]) -> Optional[List[str]]:
    names = jio.parse_label_names(text) if text is not None else ck.metadata.get("label_names")
    if names is None:
        return jio.default_label_names(n_classes) if n_classes else None
    if n_classes is not None and len(names) != n_classes:
        fail(f"--label-names has {len(names)} names but the model has {n_classes} classes")
    return list(names)


def _warn_invalid(pool: jio.Pool, invalid, limit: int = 100) -> None:
    """One warning line per unreadable item (missing or corrupt file) and one line for NaN/Inf items."""
    reasons = pool.problems(invalid)
    for n, (i, why) in enumerate(reasons.items()):
        if n == limit:
            typer.echo(f"warning: ... and {len(reasons) - limit} more unreadable item(s) (--json lists them all)", err=True)
            break
        typer.echo(f"warning: skipped item {pool.ids[i]!r}: {why}", err=True)
    nan = [i for i in invalid if int(i) not in reasons]
    if nan:
        shown = ", ".join(str(pool.ids[i]) for i in nan[:10]) + (" ..." if len(nan) > 10 else "")
        typer.echo(f"warning: {len(nan)} pool item(s) contain NaN/Inf and were not selected: {shown}", err=True)


@app.command()
def acquire(
    model: ModelOpt,
    pool: Annotated[Path, typer.Option(help="Unlabeled items: .npy, .npz (array 'x', optional 'ids'), .pt, a folder of "
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
    exclude: Annotated[Optional[Path], typer.Option(help="Items already labeled or queued, never selected: a Label Studio "
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
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Choose the next K pool items for annotators to label, and write them as a batch file or as
    Label Studio / Argilla tasks.

    Items with NaN/Inf values or unreadable files are reported by id and never selected; --exclude
    ids are never selected and anchor the diversity strategies (coreset).
    """
    kind = _output_kind(out, fmt, tuple(f.value for f in BatchFormat))
    check_writable(out, force)
    ck = load_model_file(model)
    if not pool.exists():
        fail(f"--pool not found: {pool}")
    items = jio.open_pool(pool, image_size=image_size, channels=channels, input_shape=ck.metadata.get("input_shape"),
                          mmap=True)  # a .npy pool is read chunk by chunk from disk, never held whole
    n_classes = _n_classes(ck.model, items.input_shape)
    names = _label_names(label_names, ck, n_classes)
    if kind in ("label-studio", "argilla") and names is None:
        fail("the model's number of classes is unknown: pass --label-names")
    str_ids = [str(i) for i in items.ids]
    labeled, n_unknown = None, 0
    if exclude is not None:
        tool = kind if kind in ("label-studio", "argilla") else "auto"
        labeled, unknown = items.index_of(jio.read_annotations(exclude, tool=tool, question=from_name,
                                                               label_names=names).ids)
        n_unknown = len(unknown)
    with progress_bar(f"scoring ({Strategy(strategy).value})", len(items), enabled=not json_out) as update:
        runner = get_backend(BackendName(backend).value, address=address)
        try:
            res = jacal.acquire(ck.model, items.items, k, strategy=Strategy(strategy).value, labeled=labeled, seed=seed,
                                batch_size=batch_size, device=device, mc_samples=mc_samples, progress=update,
                                backend=runner, shard_size=shard_size, embedding_layer=embedding_layer)
        finally:
            runner.close()
    written = jio.write_batch(out, res, items.ids, fmt=kind, label_names=names, uris=items.uris, from_name=from_name,
                              to_name=to_name, model_version=model_version or jio.model_version(model, ck.metadata))
    _warn_invalid(items, res.invalid)
    if n_unknown:
        typer.echo(f"warning: {n_unknown} id(s) in {exclude} are not in the pool", err=True)
    summary = {"out": str(out), "format": kind, "strategy": res.strategy, "k": written, "pool": len(items),
               "excluded": len(labeled or []), "invalid": [str_ids[i] for i in res.invalid]}
    if json_out:
        emit_json(summary)
    else:
        typer.echo(f"selected {written} of {len(items)} items with {res.strategy} -> {out} "
                   f"({len(labeled or [])} excluded, {len(res.invalid)} invalid)")


def _read_labels(path: Path, n: int):
    if not path.is_file():
        fail(f"labels file not found: {path}")
    try:
        y = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, dtype=np.int64, ndmin=1)
    except (ValueError, OSError) as err:
        fail(f"could not read labels from {path}: {err}")
    y = np.asarray(y).reshape(-1)
    if len(y) != n:
        fail(f"{path} has {len(y)} labels for {n} items")
    return y.astype(np.int64)


@app.command()
def confidence(
    model: ModelOpt,
    data: Annotated[Path, typer.Option(help="Items to score: .npy, .npz, .pt or a folder of images.")],
    labels: Annotated[Optional[Path], typer.Option(help="True labels of --data (.npy or one integer per line): adds metrics.")] = None,
    method: Annotated[Optional[ConfMethod], typer.Option(help="Confidence estimator (default max_softmax, or the --estimator "
                                                              "file's). Fitted ones need --fit-data: " + _FITTED_HELP + ".")] = None,
    fit_data: Annotated[Optional[Path], typer.Option(help="Items a fitted method learns from: a held-out split, or the "
                                                          "training items for mahalanobis and knn.")] = None,
    fit_labels: Annotated[Optional[Path], typer.Option(help="Labels of --fit-data (all fitted methods but knn and "
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
    kind = _output_kind(out, fmt) if out is not None else None
    for path in (out, save_estimator):
        if path is not None:
            check_writable(path, force)
    ck = load_model_file(model)
    x, ids = _load_items(data, ck, image_size, channels, "--data")
    if estimator is not None:
        if fit_data is not None or fit_labels is not None:
            fail("--estimator is already fitted: drop --fit-data/--fit-labels, or fit anew without --estimator")
        est = ConfidenceEstimator.load(estimator, device=device)
        if method is not None and ConfMethod(method).value != est.method:
            fail(f"--method {ConfMethod(method).value} differs from {estimator}'s method {est.method}")
    else:
        est = ConfidenceEstimator(ConfMethod(method).value if method is not None else "max_softmax", device=device)
        if est.method in FITTED_METHODS:
            needs_labels = est.method in NEEDS_LABELS
            if fit_data is None or (needs_labels and fit_labels is None):
                what = "--fit-data and --fit-labels" if needs_labels else "--fit-data"
                fail(f"method '{est.method}' needs {what} ({FITTED_METHODS[est.method]} items it learns from), or a "
                     "fitted --estimator file")
            xf, _ = _load_items(fit_data, ck, image_size, channels, "--fit-data")
            est.learn(ck.model, xf, _read_labels(fit_labels, len(xf)) if fit_labels is not None else None)
        else:
            if fit_data is not None or fit_labels is not None:
                typer.echo(f"warning: method '{est.method}' learns nothing; --fit-data/--fit-labels are ignored", err=True)
            est.learn(ck.model, None)
    conf, pred = est.confidence_and_prediction(ck.model, x)
    summary = {"n": len(x), "method": est.method, "mean_confidence": float(np.mean(conf))}
    if labels is not None:
        summary["metrics"] = est.metrics(conf, pred, _read_labels(labels, len(x)))
    if review_below is not None:
        summary["to_review"] = int((conf < review_below).sum())
    if out is not None:
        rows = [{"id": i, "predicted": int(p), "confidence": float(c)} for i, p, c in zip(ids, pred, conf)]
        if review_below is not None:
            for r in rows:
                r["review"] = int(r["confidence"] < review_below)
        jio.write_rows(out, rows, fmt=kind)
        summary["out"] = str(out)
    if save_estimator is not None:
        est.save(save_estimator)
        summary["estimator"] = str(save_estimator)
    elif estimator is not None:
        summary["estimator"] = str(estimator)
    if json_out:
        emit_json(summary)
    else:
        line = f"scored {len(x)} items with {est.method}: mean confidence {summary['mean_confidence']:.4f}"
        if "metrics" in summary:
            mt = summary["metrics"]
            line += (f"; accuracy {mt['accuracy']:.4f}, failure AUROC {mt['failure_auroc']:.4f}, AURC {mt['aurc']:.4f}, "
                     f"FPR@95%TPR {mt['fpr_at_95_tpr']:.4f}" + (f", ECE {mt['ece']:.4f}" if "ece" in mt else ""))
        if review_below is not None:
            line += f"; {summary['to_review']} below {review_below} for review"
        if save_estimator is not None:
            line += f"; estimator saved to {save_estimator}"
        typer.echo(line + (f" -> {out}" if out else ""))


LoopPreset = Enum("LoopPreset", {k.replace("-", "_"): k for k in LOOP_PRESETS}, type=str)


@app.command()
def loop(
    preset: Annotated[LoopPreset, typer.Option(help="'smoke' (digits, all strategies, 3 seeds, minutes on a CPU), "
                                                    "'mnist-gal' (Gal et al. 2017: 20 labels +10 per round), "
                                                    "'mnist-batch100' (+100 per round).")] = "smoke",
    dataset: Annotated[Optional[DatasetName], typer.Option(help="Override the preset's dataset.")] = None,
    data_root: DataRootOpt = None,
    download: Annotated[bool, typer.Option(help="Allow torchvision to download a missing dataset.")] = False,
    strategies: Annotated[Optional[str], typer.Option(help="Comma-separated strategies (default: all).")] = None,
    initial: Annotated[Optional[int], typer.Option(help="Labeled items before the first round.")] = None,
    k: Annotated[Optional[int], typer.Option(help="Items acquired per round.")] = None,
    rounds: Annotated[Optional[int], typer.Option(help="Acquisition rounds.")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Independent repetitions (paired across strategies).")] = None,
    model: Annotated[Optional[str], typer.Option(help="'mlp' or 'cnn'.")] = None,
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
    base = LOOP_PRESETS[LoopPreset(preset).value]
    changes = {name: v for name, v in (("initial", initial), ("k", k), ("rounds", rounds), ("seeds", seeds),
                                       ("model", model), ("max_epochs", max_epochs), ("pool_size", pool_size))
               if v is not None}
    if dataset is not None:
        changes["dataset"] = DatasetName(dataset).value
    if strategies:
        changes["strategies"] = tuple(s.strip() for s in strategies.split(",") if s.strip())
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
