"""Batch-diversity selection in bounded memory: k-center greedy and k-means++ seeding.

Both algorithms are sequential: each pick depends on the distances updated by the previous one, so
read literally they pass over the whole embedding once per pick (at a million items and 512 numbers
each, k = 1,000 picks stream 2 TB) and their speed is the machine's memory bandwidth. faiss's
batched nearest-neighbour search has nothing to batch here, and its k-means is Lloyd's iteration,
not seeding. The functions take the whole ``(N, d)`` embedding matrix as it is (a view, never a
copy) and an ``allowed`` mask, and keep a few numbers per row besides.

The rooms:

* :mod:`~jacal.acquisition.selection.config`: the :func:`selection` context, which chooses the path;
* :mod:`~jacal.acquisition.selection.kernels`: bounded-memory distance kernels;
* :mod:`~jacal.acquisition.selection.memory`: the bytes each path reads, and :func:`trace`;
* :mod:`~jacal.acquisition.selection.kcenter`: k-center greedy, exact or on a sketch;
* :mod:`~jacal.acquisition.selection.centers`: a set of centers, dense or outer-product (BADGE);
* :mod:`~jacal.acquisition.selection.d2`: the D² samplers over a center set (one pass per pick, by
  rejection, AFK-MC²);
* :mod:`~jacal.acquisition.selection.kmeans`: the k-means++ fronts.

Paths (``method=``, or the :func:`selection` context's, ``"auto"`` unless set):

* ``"exact"``: k-center by a pass per pick; k-means++ by rejection from the starting D² (the same
  law as a pass per pick, which ``selection(d2_sampler="pass")`` runs instead);
* ``"mcmc"`` (k-means++): AFK-MC² chains of ``chain_length`` proposals;
* ``"sketch"`` (k-center): the greedy on a Gaussian sketch of ``sketch_dim`` columns;
* ``"approximate"``: each function's approximate path;
* ``"auto"``: k-center exact while the embedding's bytes × k stay under ``exact_max_bytes`` (16 GB)
  and on its sketch above; the k-means++ seedings exact at any size.

``benchmarks/bench_acquire.py --compare-exact`` and ``--compare-passes`` measure the trades.
"""
from jacal.acquisition.selection.config import SELECTION_METHODS, selection
from jacal.acquisition.selection.kcenter import k_center_greedy
from jacal.acquisition.selection.kmeans import kmeans_pp, kmeans_pp_outer
from jacal.acquisition.selection.memory import trace

__all__ = ["k_center_greedy", "kmeans_pp", "kmeans_pp_outer", "selection", "trace", "SELECTION_METHODS"]
