"""`jacal train` and `jacal score`: a classifier trained and saved; per-point Jacobian norms of one."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from jacal.pipeline import score_file, train_checkpoint
from ._common import emit_json, per_file_text, progress_bar, warn
from ._options import (ANNOTATION_FILES_HELP, Activation, DataRootOpt, DatasetName, DeviceOpt, DownloadOpt,
                       ForceOutOpt, Format, FromNameOpt,
                       JsonOpt, Method, Optimizer, Output, Split)


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
    pool: Annotated[Optional[Path], typer.Option(help="Train on annotated items instead of --dataset: the pool the "
                                                      "--labels name (array file, image folder or .csv/.jsonl "
                                                      "manifest, as for `jacal acquire`).",
                                                      exists=True)] = None,
    labels: Annotated[Optional[List[Path]], typer.Option(help="Annotations of --pool items (no held-out split: test "
                                                              "metrics are not reported). " + ANNOTATION_FILES_HELP,
                                                         exists=True, dir_okay=False)] = None,
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
    source = ("labels:" + "+".join(f.name for f in labels)) if labels and pool is not None else DatasetName(dataset).value
    with progress_bar(f"training on {source}", 1, enabled=not json_out) as update:
        meta = train_checkpoint(out, dataset=DatasetName(dataset).value, data_root=data_root, download=download,
                                n_train=n_train, pool=pool, labels=labels or None, label_names=label_names, from_name=from_name,
                                image_size=image_size, channels=channels, width=width, depth=depth,
                                activation=Activation(activation).value, weight_variance=weight_variance,
                                optimizer=Optimizer(optimizer).value, lr=lr, batch_size=batch_size, epochs=epochs,
                                seed=seed, device=device, force=force, progress=update, on_warning=warn)
    m = meta["metrics"]
    if json_out:
        emit_json(meta)
    elif "source" in meta:
        src = meta["source"]
        files = f"; {per_file_text(src['per_file'])}" if len(src["per_file"]) > 1 else ""
        oos = f"; {src['n_out_of_set']} 'none of these' left out" if src["n_out_of_set"] else ""
        typer.echo(f"saved {out}: train acc {m['train_accuracy']:.4f} on {src['n_labeled']} labeled items{files}{oos} "
                   f"(no held-out split, so no test accuracy; {m['steps']} steps, {m['wall_time_s']:.1f}s)")
    else:
        typer.echo(f"saved {out}: train acc {m['train_accuracy']:.4f}, test acc {m['test_accuracy']:.4f}, "
                   f"gap {m['gap']:.4f} ({m['steps']} steps, {m['wall_time_s']:.1f}s)")


def score(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by `jacal train` (or a TorchScript / "
                                                    "torch.export .pt2 file, with --input).",
                                               exists=True, dir_okay=False)],
    dataset: Annotated[Optional[DatasetName], typer.Option(help="Score a dataset split (default: the checkpoint's dataset).")] = None,
    split: Annotated[Split, typer.Option(help="The dataset split to score.")] = "test",
    data_root: DataRootOpt = None,
    input_file: Annotated[Optional[Path], typer.Option("--input", help="Score points from a .npy, .npz (array 'x', "
                                                                       "optional 'ids') or .pt file instead.",
                                                                  exists=True, dir_okay=False)] = None,
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
                             split=Split(split).value, data_root=data_root, input_file=input_file,
                             output=Output(output).value, method=Method(method).value, batch_size=batch_size,
                             device=device, out=out,
                             fmt=fmt.value if fmt is not None else None, force=force, progress=update)
    if json_out:
        emit_json(summary)
    else:
        extra = f", accuracy {summary['accuracy']:.4f}" if "accuracy" in summary else ""
        typer.echo(f"scored {summary['n']} points ({summary['source']}): mean ‖J‖_F {summary['mean']:.4g}, median "
                   f"{summary['median']:.4g}, max {summary['max']:.4g}{extra}" + (f" -> {out}" if out else ""))
