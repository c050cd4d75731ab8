"""`jacal acquire` and `jacal confidence`: the labeling pipeline's steps (:mod:`jacal.pipeline`)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from jacal.acquisition import STRATEGIES
from jacal.acquisition.engine import OPEN_SET_LAYERS
from jacal.pipeline import acquire_batch, confidence_file
from ._common import emit_json, excluded_text, progress_bar, warn
from ._options import (ANNOTATION_FILES_HELP, FITTED_HELP, STRATEGY_METAVAR, AddressOpt, BackendName, BackendOpt,
                       BatchFormat, ChannelsOpt, ConfMethod, DeviceOpt, ForceOutOpt, FromNameOpt, ImageSizeOpt, JsonOpt,
                       LabelNamesOpt, ModelOpt, RowFormat, ToNameOpt, open_set_layer, strategy_name)


def acquire(
    model: ModelOpt,
    pool: Annotated[Path, typer.Option(help="Unlabeled items: .npy, .npz (array 'x', optional 'ids'), .pt, a folder of "
                                            "PNG/JPEG images (nested class folders too; ids = relative paths), or a "
                                            "manifest (.csv or .jsonl with 'id' and 'path'/'uri': local paths, relative "
                                            "to the manifest, or file:// URIs). Images are decoded batch by batch; "
                                            "unreadable files are skipped with a warning.",
                                            exists=True)],
    k: Annotated[int, typer.Option(help="How many items to select.")],
    out: Annotated[Path, typer.Option(help="Batch file to write: .csv or .jsonl (id, rank, score, predicted, confidence), "
                                           "or .json with --format label-studio / argilla (tasks with the model's "
                                           "prediction as a pre-annotation).")],
    strategy: Annotated[str, typer.Option(metavar=STRATEGY_METAVAR, callback=strategy_name,
                                          help="Acquisition strategy; when to use each: "
                                               + "; ".join(f"'{n}': {c.use_when}" for n, c in STRATEGIES.items())
                                               + ".")] = "jacobian",
    open_set: Annotated[str, typer.Option(
        metavar="[" + "|".join(OPEN_SET_LAYERS) + "]", callback=open_set_layer,
        help="What the items answered 'none of these' in --exclude teach: 'auto' (default) is the strategy's own "
             "layer ('share-floor' for jacobian, 'class-floor' for the others); 'share-floor' drops, per predicted "
             "class, as many of the least likely labelable items as the calibrated probability expects out of the "
             "set there (the class floor until every class has a labeled item) and weighs the rest by it; "
             "'class-floor' selects, per predicted class, among the items at least as likely labelable as the "
             "class's median; 'weight' weighs each item by that probability; "
             "'off' ignores them.")] = "auto",
    exclude: Annotated[Optional[List[Path]], typer.Option(help="Items already labeled or queued, never selected. "
                                                               + ANNOTATION_FILES_HELP,
                                                          exists=True, dir_okay=False)] = None,
    fmt: Annotated[Optional[BatchFormat], typer.Option("--format", help="Output format: csv, jsonl, label-studio (task "
                                                                        "import JSON) or argilla (record JSON); default: "
                                                                        "from --out's suffix.")] = None,
    label_names: LabelNamesOpt = None,
    from_name: FromNameOpt = "label",
    to_name: ToNameOpt = "image",
    model_version: Annotated[Optional[str], typer.Option(help="Label Studio model_version / Argilla agent of the "
                                                              "predictions (default: the checkpoint's metadata, else "
                                                              "'jacal', the same every round, so the project keeps "
                                                              "showing them).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds tie-breaking, sampling and MC dropout.")] = 0,
    batch_size: Annotated[Optional[int], typer.Option(help="Items per chunk (bounds memory; never changes the picks). "
                                                           "Default: from the item size, at most 4M input numbers "
                                                           "and 256 items per chunk.")] = None,
    mc_samples: Annotated[int, typer.Option(help="MC-dropout samples for --strategy bald.")] = 20,
    embedding_layer: Annotated[Optional[str], typer.Option(
        help="coreset/badge: the layer whose output embeds each item, named as in model.named_modules() (TorchScript "
             "too, e.g. 'body.2'; .pt2: the module path recorded in the graph). Default: the input of the model's "
             "last linear layer.")] = None,
    image_size: ImageSizeOpt = None,
    channels: ChannelsOpt = None,
    device: DeviceOpt = "auto",
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    shard_size: Annotated[int, typer.Option(help="Ray: pool items per task (a .npy pool is memory-mapped and read shard by "
                                                 "shard; image files must be at the same paths on every worker).")] = 65536,
    force: ForceOutOpt = False,
    json_out: JsonOpt = False,
    stop_set: Annotated[Optional[Path], typer.Option(help="Unlabeled items a stopping criterion watches, the same every "
                                                          "round (read as --pool; keep them out of the pool). With "
                                                          "--stop-state the stop advice comes with the batch.",
                                                     exists=True)] = None,
    stop_state: Annotated[Optional[Path], typer.Option(help="The stopping criterion's state (JSON): read if it exists, "
                                                            "written back after the batch, so the advice follows the "
                                                            "rounds. A rerun with the same --model repeats the advice.",
                                                       dir_okay=False)] = None,
    stop_criterion: Annotated[Optional[str], typer.Option(help="Criterion for a new --stop-state (default: jacal's "
                                                               "recommended one): settled-predictions, "
                                                               "settled-boundaries, stabilizing-predictions, "
                                                               "classification-change, boundary-pairs, boundary-share, "
                                                               "overall-uncertainty, max-uncertainty.")] = None,
    figure: Annotated[Optional[Path], typer.Option(help="Also write the batch at a glance (PNG): its picks by class "
                                                        "pair (predicted × runner-up) and their reasons summarized.",
                                                   dir_okay=False)] = None,
) -> None:
    """Choose the next K pool items for annotators to label, and write them as a batch file or as
    Label Studio / Argilla tasks, each with the reason it was picked.

    Items with NaN/Inf values or unreadable files are reported by id and never selected; --exclude
    ids are never selected and anchor the diversity strategies (coreset). With --stop-set and
    --stop-state, a stopping criterion says whether to stop labeling after this round.

    Batch files (csv/jsonl) hold id, rank, score, predicted, confidence and the pick's reason: rank is
    the order to label in; score is the strategy's per-item score (higher = more wanted). For the
    score-only strategies (least-confidence, margin, entropy, bald, jacobian-topk) scores fall with
    rank; for jacobian, jacobian-kmeans, badge and ldm-s the rank is the k-means++ draw order and for
    coreset the k-center order, which spread the batch, so rank 2 may score below rank 3.
    """
    notes: List[str] = []
    with progress_bar(f"scoring ({strategy})", 0, enabled=not json_out) as update:
        summary = acquire_batch(model, pool, k, out, fmt=fmt.value if fmt is not None else None,
                                strategy=strategy, exclude=exclude or None, open_set=open_set,
                                label_names=label_names,
                                from_name=from_name, to_name=to_name, model_version=model_version, seed=seed,
                                batch_size=batch_size, device=device, mc_samples=mc_samples,
                                embedding_layer=embedding_layer, image_size=image_size, channels=channels,
                                backend=BackendName(backend).value, address=address, shard_size=shard_size, force=force,
                                progress=update, on_warning=notes.append, stop_set=stop_set, stop_state=stop_state,
                                stop_criterion=stop_criterion, figure=figure)
    for line in notes:  # after the progress bar has gone
        warn(line)
    if json_out:
        emit_json(summary)
    else:
        typer.echo(f"selected {summary['k']} of {summary['pool']} items with {summary['strategy']} -> {out} "
                   f"({excluded_text(summary)}, {len(summary['invalid'])} invalid)")
        b = summary["batch"]
        line = f"batch covers {b['pairs_covered']} of {b['pairs_possible']} class pairs"
        if b["top_pairs"]:
            line += "; most picked: " + ", ".join(f"{p} ({c})" for p, c in b["top_pairs"][:3])
        if "boundary_distance_median" in b:
            line += f"; median boundary distance {b['boundary_distance_median']:.3g}"
        typer.echo(line + (f" -> {summary['figure']}" if "figure" in summary else ""))
        if "stop" in summary:
            st = summary["stop"]
            typer.echo(f"stop advice ({st['criterion']}, round {st['round']}): {st['reason']}"
                       + (" (same model as last round)" if st.get("repeated") else ""))


def confidence(
    model: ModelOpt,
    data: Annotated[Path, typer.Option(help="Items to score: .npy, .npz, .pt, a folder of images or a "
                                            "manifest (.csv or .jsonl).",
                                       exists=True)],
    labels: Annotated[Optional[Path], typer.Option(help="True labels of --data (.npy or one integer per line): adds "
                                                        "metrics.",
                                                   exists=True, dir_okay=False)] = None,
    method: Annotated[Optional[ConfMethod], typer.Option(help="Confidence estimator (default max-softmax, or the --estimator "
                                                              "file's). Fitted ones need --fit-data: " + FITTED_HELP + ".")] = None,
    fit_data: Annotated[Optional[Path], typer.Option(help="Items a fitted method learns from: a held-out split, or the "
                                                          "training items for mahalanobis and knn.",
                                                          exists=True)] = None,
    fit_labels: Annotated[Optional[Path], typer.Option(help="Labels of --fit-data (all fitted methods but knn and "
                                                            "jacobian-residual need them).",
                                                            exists=True, dir_okay=False)] = None,
    estimator: Annotated[Optional[Path], typer.Option(help="A fitted estimator written by --save-estimator: its method and "
                                                           "state, checked against --model's weights.",
                                                      exists=True, dir_okay=False)] = None,
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
