"""jacal's public I/O: pools in, annotations back in, batches and labeling-tool tasks out.

**Pools** (:func:`open_pool`), what :func:`jacal.acquire` scores:

* arrays: ``.npy``, ``.npz`` (array ``x``, optional ``ids``), ``.pt`` (:func:`load_array`);
* a folder of PNG/JPEG images, nested class folders included; ids are the paths relative to the
  folder (the file names for a flat folder);
* a **manifest**, as labeling tools export them: a CSV (``.csv``) or JSON-lines (``.jsonl``) file
  with an ``id`` column and a ``path`` and/or ``uri`` column. A value is a local path (relative paths
  resolve against the manifest's folder) or a ``file://`` URI; with both columns jacal reads
  ``path`` and hands ``uri`` to the labeling tool.

Images are decoded lazily, one batch at a time, by :class:`ImagePool` with the documented transform
of :func:`load_image_folder`; a missing or unreadable file becomes an all-NaN item, which
:func:`jacal.acquire` reports in ``invalid`` and never selects (:meth:`Pool.problems` names why).

**Annotations back in** (:func:`read_annotations`): a Label Studio JSON export, an Argilla export
(``dataset.records.to_json``), a CSV (or JSON lines) with ``id`` and optional ``label`` columns,
or a plain list of ids; labels map to class indices through the label names
(:func:`parse_label_names`, :meth:`Annotations.label_indices`). The reserved answer
:data:`NONE_OF_THESE` (or a skipped annotation) marks an item outside the label set
(:attr:`Annotations.out_of_set`); several files are read as one by :func:`read_all_annotations`.

**Batches out** (:func:`write_batch`): CSV / JSON lines (id, rank, score, predicted, confidence;
``rank`` is the strategy's labeling order, ``score`` its per-item score, which for the k-means++
and k-center strategies need not fall with rank: see :mod:`jacal.io.batches`),
Label Studio task-import JSON (:func:`label_studio_tasks`) or Argilla record JSON
(:func:`argilla_records`), always written atomically.

The modules, by task: :mod:`jacal.io.pools` (pools and manifests), :mod:`jacal.io.readers` (array
files, image folders, the image transform), :mod:`jacal.io.labels` (the label vocabulary),
:mod:`jacal.io.records` (the annotations record, majority voting, merging), :mod:`jacal.io.annotations`
(which export a file is, read back in), :mod:`jacal.io.join` (annotations joined with a pool),
:mod:`jacal.io.batches` (batch files out) and :mod:`jacal.io.formats` (each labeling tool's file
shape, both directions, one module per tool; ``jacal serve`` speaks Label Studio through it). Every
public name is re-exported here. :mod:`jacal.pipeline` strings them into one call per labeling step
(a pool file in, a batch file out).
"""
from jacal.io.annotations import TOOLS, read_all_annotations, read_annotations, read_ids
from jacal.io.batches import BATCH_FORMATS, DEFAULT_MODEL_VERSION, model_version, write_batch
from jacal.io.formats.argilla import argilla_records
from jacal.io.formats.labelstudio import annotations_from_label_studio, label_studio_tasks
from jacal.io.formats.tabular import batch_rows, write_rows
from jacal.io.join import LabeledItems, labeled_items
from jacal.io.labels import NONE_OF_THESE, is_none_of_these, parse_label_names
from jacal.io.pools import ARRAY_SUFFIXES, MANIFEST_SUFFIXES, ImagePool, Manifest, Pool, open_pool, read_manifest
from jacal.io.readers import (IMAGE_SUFFIXES, decode_image, image_transform, list_image_folder, load_array,
                              load_image_folder, read_labels)
from jacal.io.records import Annotations, merge_annotations

__all__ = [
    "Pool", "ImagePool", "open_pool", "read_manifest", "Manifest",
    "Annotations", "read_annotations", "read_ids", "parse_label_names",
    "LabeledItems", "labeled_items", "NONE_OF_THESE", "is_none_of_these", "merge_annotations",
    "read_all_annotations", "annotations_from_label_studio",
    "batch_rows", "label_studio_tasks", "argilla_records", "write_rows", "write_batch", "model_version",
    "BATCH_FORMATS", "DEFAULT_MODEL_VERSION", "TOOLS", "MANIFEST_SUFFIXES", "ARRAY_SUFFIXES",
    "load_array", "load_image_folder", "image_transform", "IMAGE_SUFFIXES", "decode_image", "list_image_folder",
    "read_labels",
]
