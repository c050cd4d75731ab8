"""Why each item is in the batch: a one-line reason and the structured fields behind it.

:func:`explain` reads what the strategy read (its :class:`~jacal.features.PoolFeatures`) at the
picked rows, so the numbers are the ones the selection used, never recomputed:

- every strategy: ``predicted`` (a) and ``runner_up`` (b), the top two classes, so ``a | b`` is the
  class pair across the item's nearest decision boundary; ``confidence`` p_a; ``margin`` p_a − p_b;
  ``selection_score``, the pick's score when it was picked (for the diversity strategies its
  distance to the batch so far);
- with boundary embeddings (``jacobian`` and its variants): ``boundary_distance`` =
  ``(z_a − z_b) / ‖∇ₓ(z_a − z_b)‖`` = ``1/‖v(x)‖``, in the model's input units (exact where the
  embedding is, see :func:`jacal.features.extract_features`);
- ``jacobian_norm`` (‖∂softmax/∂x‖_F), ``mutual_information`` (BALD), ``ldm``, ``entropy`` where the
  strategy scored them;
- open pools: ``in_distribution`` and ``in_distribution_floor`` when some items came back "none of these".

Writers (CSV/JSONL, Label Studio, Argilla) only format these.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from jacal.features import PoolFeatures

__all__ = ["explain", "batch_summary", "batch_figure", "REASON_FIELDS"]

#: Every structured field :func:`explain` may return, in the order the writers put their columns.
REASON_FIELDS = ("runner_up", "margin", "boundary_distance", "jacobian_norm", "mutual_information", "entropy", "ldm",
                 "in_distribution", "in_distribution_floor", "selection_score")

#: the diversity strategies' selection score, in words
_DIVERSE = {"jacobian-kmeans": "Jacobian distance {} to the batch so far",
            "coreset": "distance {} to the nearest labeled item or earlier pick",
            "badge": "gradient-embedding distance {} to the batch so far", "ldm-s": "seeding weight {}"}


def _g(v: float) -> str:
    return f"{v:.3g}"


def _name(c: int, names: Optional[Sequence[str]]) -> str:
    return str(names[c]) if names is not None and 0 <= c < len(names) else str(c)


def explain(f: PoolFeatures, indices: np.ndarray, selection_scores: np.ndarray, strategy: str, *,
            open_set: bool = False, label_names: Optional[Sequence[str]] = None) -> Tuple[List[str], Dict[str, np.ndarray]]:
    """The reason for each pick.

    Args:
        f: the feature pass the strategy selected from.
        indices: ``(k,)`` the picks, in rank order.
        selection_scores: ``(k,)`` each pick's score when it was picked.
        strategy: the strategy's name (picks the wording; an unknown name gets the generic one).
        open_set: whether ``f.in_distribution`` was learned from "none of these" answers (else it
            is 1 everywhere and says nothing).
        label_names: class names for the reason text (default: class indices).

    Returns:
        ``(reasons, fields)``: ``k`` one-line strings, and ``{field: (k,) array}`` (see :data:`REASON_FIELDS`;
        ``predicted`` and ``confidence`` too).
    """
    idx = np.asarray(indices, dtype=np.int64)
    p = np.nan_to_num(f.probs[idx], nan=0.0)
    order = np.argsort(-p, axis=1, kind="stable")
    a, b = order[:, 0], order[:, 1] if p.shape[1] > 1 else order[:, 0]
    rows = np.arange(len(idx))
    fields: Dict[str, np.ndarray] = {"predicted": a.astype(np.int64), "runner_up": b.astype(np.int64),
                                     "confidence": p[rows, a], "margin": p[rows, a] - p[rows, b]}
    if f.boundary_embedding is not None:
        norms = np.linalg.norm(f.boundary_embedding[idx].astype(np.float64), axis=1)
        fields["boundary_distance"] = 1.0 / np.maximum(norms, 1e-300)
    if f.jacobian is not None:
        fields["jacobian_norm"] = np.asarray(f.jacobian[idx], dtype=np.float64)
    if f.bald is not None:
        fields["mutual_information"] = np.asarray(f.bald[idx], dtype=np.float64)
    if strategy == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            fields["entropy"] = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    if f.ldm is not None:
        fields["ldm"] = np.asarray(f.ldm[idx], dtype=np.float64)
    if open_set and f.in_distribution is not None:
        fields["in_distribution"] = np.asarray(f.in_distribution[idx], dtype=np.float64)
        fields["in_distribution_floor"] = np.full(len(idx), float(f.in_distribution_floor))
    fields["selection_score"] = np.asarray(selection_scores, dtype=np.float64)

    reasons = []
    for r in range(len(idx)):
        ca, cb = _name(int(a[r]), label_names), _name(int(b[r]), label_names)
        pair = f"between {ca} and {cb}"
        if "boundary_distance" in fields:
            text = f"{pair}, {_g(fields['boundary_distance'][r])} from the boundary"
        elif strategy == "margin":
            text = f"{pair}, margin {_g(fields['margin'][r])} (p {p[r, a[r]]:.2f} vs {p[r, b[r]]:.2f})"
        elif strategy == "least-confidence":
            text = f"confidence {fields['confidence'][r]:.2f} in {ca} (runner-up {cb})"
        elif "entropy" in fields:
            text = f"entropy {_g(fields['entropy'][r])} nats, {pair}"
        elif "mutual_information" in fields:
            text = f"mutual information {_g(fields['mutual_information'][r])} nats, {pair}"
        elif "jacobian_norm" in fields:
            text = f"{pair}, Jacobian norm {_g(fields['jacobian_norm'][r])}"
        elif "ldm" in fields:
            text = f"{pair}, least disagree metric {_g(fields['ldm'][r])}"
        elif strategy == "random":
            text = f"random draw; predicted {ca} ({fields['confidence'][r]:.2f})"
        elif strategy in _DIVERSE:
            text = pair
        else:
            text = f"{pair}, score {_g(selection_scores[r])}"
        if strategy in _DIVERSE:
            text += "; " + _DIVERSE[strategy].format(_g(selection_scores[r]))
        if "in_distribution" in fields:
            s, fl = fields["in_distribution"][r], fields["in_distribution_floor"][r]
            text += f"; in-distribution {s:.2f} {'≥' if s >= fl else '<'} floor {fl:.2f}"
        reasons.append(text)
    return reasons, fields


def batch_summary(result, *, label_names: Optional[Sequence[str]] = None, top: int = 5) -> dict:
    """The batch at a glance: which class-pair boundaries its picks sit against, and its reasons summarized.

    Args:
        result: a :class:`jacal.AcquisitionResult` (with ``reason_fields``).
        label_names: class names (default: indices).
        top: how many of the most picked pairs to list.

    Returns:
        ``{"k", "strategy", "n_classes", "pairs": (K, K) counts (rows: predicted a, columns: runner-up
        b), "pairs_covered", "pairs_possible", "top_pairs": [(a | b, count)...], "<field>_median"
        for the numeric reason fields}``.
    """
    f = getattr(result, "reason_fields", None) or {}
    if "runner_up" not in f:
        raise ValueError("Expected `result` to carry reasons (an AcquisitionResult from jacal.acquire).")
    a, b = np.asarray(f["predicted"]), np.asarray(f["runner_up"])
    kk = max(int(result.predicted.max(initial=0)) + 1, int(a.max(initial=0)) + 1, int(b.max(initial=0)) + 1,
             len(label_names) if label_names is not None else 0)
    counts = np.zeros((kk, kk), dtype=np.int64)
    np.add.at(counts, (a, b), 1)
    und = counts + counts.T
    iu = np.triu_indices(kk, 1)
    order = np.argsort(-und[iu], kind="stable")[:top]
    out = {"k": int(len(a)), "strategy": result.strategy, "n_classes": kk, "pairs": counts.tolist(),
           "pairs_covered": int((und[iu] > 0).sum()), "pairs_possible": int(len(iu[0])),
           "top_pairs": [[f"{_name(int(iu[0][j]), label_names)} | {_name(int(iu[1][j]), label_names)}",
                          int(und[iu][j])] for j in order if und[iu][j] > 0]}
    for name in ("boundary_distance", "margin", "mutual_information", "jacobian_norm", "in_distribution"):
        if name in f and len(f[name]):
            out[f"{name}_median"] = float(np.nanmedian(f[name]))
    if "in_distribution" in f and len(f["in_distribution"]):
        out["share_in_distribution"] = float(np.mean(f["in_distribution"] >= f["in_distribution_floor"]))
    return out


def batch_figure(result, path, *, label_names: Optional[Sequence[str]] = None) -> dict:
    """Write a PNG of the batch at a glance: the K×K map of picks by class pair (predicted a ×
    runner-up b) beside the distribution of the picks' main reason field (boundary distance, else
    margin), titled with :func:`batch_summary`'s numbers. Returns that summary."""
    from jacal._internal.plotting import pyplot, save_png

    s = batch_summary(result, label_names=label_names)
    f = result.reason_fields
    plt = pyplot()
    kk = s["n_classes"]
    names = [_name(c, label_names) for c in range(kk)]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1.1, 1]})
    counts = np.asarray(s["pairs"])
    im = ax.imshow(np.where(counts > 0, counts, np.nan), cmap="viridis")
    for i, j in zip(*np.nonzero(counts)):
        ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                color="w" if counts[i, j] < counts.max() * 0.6 else "k")
    ax.set_xticks(range(kk), names, fontsize=7, rotation=90 if kk > 12 else 0)
    ax.set_yticks(range(kk), names, fontsize=7)
    ax.set_xlabel("runner-up b (other side of the nearest boundary)")
    ax.set_ylabel("predicted a")
    ax.set_title(f"{s['k']} picks by class pair: {s['pairs_covered']} of {s['pairs_possible']} pairs", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="picks")
    field = "boundary_distance" if "boundary_distance" in f else "margin"
    v = np.asarray(f[field], dtype=float)
    v_ok = v[np.isfinite(v)]
    nb = min(30, max(5, len(v_ok) // 3))
    if field == "boundary_distance" and len(v_ok) and v_ok.min() > 0 and v_ok.max() > 10 * v_ok.min():
        ax2.hist(v_ok, bins=np.geomspace(v_ok.min(), v_ok.max(), nb + 1), color="C0")  # distances span decades
        ax2.set_xscale("log")
    else:
        ax2.hist(v_ok, bins=nb, color="C0")
    ax2.set_xlabel(field.replace("_", " ") + (" (input units)" if field == "boundary_distance" else " p_a − p_b"))
    ax2.set_ylabel("picks")
    lines = [f"strategy {s['strategy']}, {s['k']} picks", f"median {field.replace('_', ' ')} {np.nanmedian(v):.3g}"]
    if s["top_pairs"]:
        lines.append("most picked: " + ", ".join(f"{p} ({c})" for p, c in s["top_pairs"][:3]))
    if "share_in_distribution" in s:
        lines.append(f"in-distribution ≥ floor: {s['share_in_distribution']:.0%}")
    ax2.set_title("\n".join(lines), fontsize=8, loc="left")
    fig.tight_layout()
    save_png(fig, path)
    return s
