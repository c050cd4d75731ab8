"""One module per labeling tool's file shape, both directions: :mod:`~jacal.io.formats.labelstudio`
(task import, predictions, the JSON export), :mod:`~jacal.io.formats.argilla` (records and their
export) and :mod:`~jacal.io.formats.tabular` (CSV / TSV / JSON-lines rows and plain id lists).
:mod:`~jacal.io.formats.reasons` holds the per-pick fields every writer carries."""
