"""jacal's private helpers: each is shared by several public packages, and none is imported by users.

One concern per module: :mod:`~jacal._internal.validation` (argument and tensor checks, every user
error in one line), :mod:`~jacal._internal.io` (atomic file writes and output folders),
:mod:`~jacal._internal.store` (the checked, versioned, locked sqlite stores of ``jacal replicate``
and ``jacal loop``), :mod:`~jacal._internal.stats` (the small statistics of the replication suite
and the loop), :mod:`~jacal._internal.plotting` (matplotlib without a display, atomic PNG writes),
:mod:`~jacal._internal.activations` (breakpoints, derivatives and region codes of activations) and
:mod:`~jacal._internal.scores` (per-item scores on arrays, below the feature pass). The public
packages re-export what a user may call.
"""
