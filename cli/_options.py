"""The command line's vocabulary in one place: a ``str`` Enum for every fixed choice and the options
that several commands share (``Annotated`` types with their help).

Input files are ``Path`` options with ``exists=True``: a missing one is a one-line usage error (exit
code 1, see :class:`cli._common.JacalGroup`) before any work starts.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

import jacal
from jacal.acquisition import STRATEGIES
from jacal.confidence import FITTED as FITTED_METHODS, METHODS as CONFIDENCE_METHODS
from jacal.loop import LOOP_PRESETS
from jacal.models import MODEL_KINDS
from jacal.replication import PRESETS


def _choices(name: str, values) -> type:
    """A ``str`` Enum whose values are ``values`` (member names: the values with ``-`` as ``_``)."""
    return Enum(name, {v.replace("-", "_"): v for v in values}, type=str)


# ------------------------------------------------------------------------------------------ choices

DatasetName = _choices("DatasetName", jacal.DATASETS)
Activation = _choices("Activation", jacal.models.ACTIVATIONS)
Optimizer = _choices("Optimizer", jacal.training.OPTIMIZERS)
Output = _choices("Output", jacal.sensitivity.OUTPUTS)
Method = _choices("Method", jacal.sensitivity.METHODS)
BackendName = _choices("BackendName", ("local", "ray"))
Preset = _choices("Preset", PRESETS)
LoopPreset = _choices("LoopPreset", LOOP_PRESETS)
Strategy = _choices("Strategy", STRATEGIES)
ConfMethod = _choices("ConfMethod", CONFIDENCE_METHODS)
Arch = _choices("Arch", MODEL_KINDS)
FITTED_HELP = ", ".join(f"{k} ({v})" for k, v in FITTED_METHODS.items())


Split = _choices("Split", ("train", "test"))
Format = _choices("Format", ("csv", "json"))
RowFormat = _choices("RowFormat", ("csv", "jsonl"))
BatchFormat = _choices("BatchFormat", jacal.io.BATCH_FORMATS)


def strategy_name(name: str) -> str:
    """``--strategy``: one :data:`Strategy` value."""
    known = [s.value for s in Strategy]
    if name not in known:
        raise typer.BadParameter(f"{name!r} is not one of {', '.join(map(repr, known))}.")
    return name


def open_set_layer(name: str) -> str:
    """``--open-set``: one of :data:`jacal.acquisition.engine.OPEN_SET_LAYERS`."""
    from jacal.acquisition.engine import OPEN_SET_LAYERS

    if name not in OPEN_SET_LAYERS:
        raise typer.BadParameter(f"{name!r} is not one of {', '.join(map(repr, OPEN_SET_LAYERS))}.")
    return name


def strategy_list(text: Optional[str]) -> Optional[tuple]:
    """``--strategies``: comma-separated :data:`Strategy` values, each checked like a single choice."""
    if not text:
        return None
    return tuple(strategy_name(s.strip()) for s in text.split(",") if s.strip())


STRATEGY_METAVAR = "[" + "|".join(s.value for s in Strategy) + "]"


# ------------------------------------------------------------------------------------------ shared options

DeviceOpt = Annotated[str, typer.Option(help="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.")]
DataRootOpt = Annotated[Optional[Path], typer.Option(help="Folder with downloaded datasets (torchvision layout). "
                                                          "Default: $JACAL_DATA or ~/.cache/jacal/data.")]
DownloadOpt = Annotated[bool, typer.Option(help="Allow torchvision to download a missing dataset.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]
BackendOpt = Annotated[BackendName, typer.Option(help="'local' (this process) or 'ray' (Ray tasks; needs jacal[ray]).")]
AddressOpt = Annotated[Optional[str], typer.Option(help="Ray cluster: 'auto' or 'ray://host:port' (default: start a local Ray).")]
ForceOutOpt = Annotated[bool, typer.Option(help="Overwrite an existing --out file.")]
LabelNamesOpt = Annotated[Optional[str], typer.Option(help="Class names in class-index order, comma-separated (CSV quoting "
                                                           "for names with commas). Default: the checkpoint's, else "
                                                           "0,1,...,K-1. Every label read back must be one of them.")]
FromNameOpt = Annotated[str, typer.Option(help="Label Studio: the <Choices> control's name (from_name); Argilla: the "
                                               "label question's name.")]
ToNameOpt = Annotated[str, typer.Option(help="Label Studio: the <Image> object the choices label (to_name); Argilla: "
                                             "the image field's name.")]
ANNOTATION_FILES_HELP = ("Repeat the option for several files (their union; the last file's answer wins): a Label "
                         "Studio JSON export (with queued tasks: download_all_tasks=true), a Label Studio CSV/TSV "
                         "export, an Argilla export (records.to_json), a CSV with an 'id' (and 'label') column, or "
                         "one id per line. An item answered 'none of these' (or skipped) is outside the label set: "
                         "never selected again, never trained on.")
ModelOpt = Annotated[Path, typer.Option("--model", exists=True, dir_okay=False,
                                        help="A jacal checkpoint (`jacal train`), a TorchScript file or a torch.export "
                                             "program.")]
ImageSizeOpt = Annotated[Optional[List[int]], typer.Option(help="For images (a folder or a manifest): resize to H W (or one "
                                                                "size for square); default: the checkpoint's input shape.")]
ChannelsOpt = Annotated[Optional[int], typer.Option(help="For images (a folder or a manifest): 1 (grayscale) or 3 (RGB); "
                                                         "default: the checkpoint's.")]
