"""The loop's outputs: ``curves.csv``, ``summary.json``, ``curves.png`` and ``report.md``."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from jacal._io import atomic_open
from jacal.loop.config import LoopConfig
from jacal.loop.figures import plot_curves
from jacal.loop.store import ROUND_COLUMNS
from jacal.loop.summary import summarize

__all__ = ["write_outputs", "write_report"]


def write_outputs(out: Path, cfg: LoopConfig, rows: Sequence[tuple], check: Dict[str, Any]) -> Dict[str, Any]:
    """Write every output of a run from its rounds (:data:`ROUND_COLUMNS` tuples) and per-point check;
    returns the summary as written to ``summary.json`` (NaN as ``None``)."""
    from jacal.loop import runner

    out = Path(out)
    with atomic_open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ROUND_COLUMNS)
        w.writerows(rows)
    summary = summarize(rows, cfg)
    summary["pointwise_check_c4"] = check
    summary["config"] = cfg.to_dict()
    summary["protocol"] = runner.__doc__.strip()
    plot_curves(out, rows, cfg)
    clean = json.loads(json.dumps(summary, default=float).replace("NaN", "null"))
    with atomic_open(out / "summary.json", "w") as f:
        json.dump(clean, f, indent=2)
    write_report(out, clean, cfg)
    return clean


def _p(p: Optional[float]) -> str:
    return "–" if p is None or not math.isfinite(p) else f"{p:.2g}"


def _fmt(c: Dict[str, float]) -> str:
    if c.get("mean") is None:
        return "–"
    if c.get("ci_low") is None:
        return f"{c['mean']:.4f}"
    return f"{c['mean']:.4f} [{c['ci_low']:.4f}, {c['ci_high']:.4f}]"


def write_report(out: Path, summary: Dict[str, Any], cfg: LoopConfig) -> None:
    """``report.md`` from a written summary (``summary.json``'s content)."""
    per = summary["strategies"]
    lines = [f"# Active learning on {cfg.dataset}: {cfg.initial} initial labels, +{cfg.k} per round, {cfg.rounds} rounds, "
             f"{cfg.seeds} seed(s)", "", "## Ranking (area under the learning curve, normalized)", "",
             "| rank | strategy | AULC mean [95% CI] | final accuracy | labels to " + " / ".join(f"{t:.0%}" for t in cfg.thresholds)
             + " | acquisition s/round | vs random | vs best baseline |", "|---|---|---|---|---|---|---|---|"]
    for rank, s in enumerate(summary["ranking"], 1):
        d = per[s]
        reach = " / ".join("–" if v is None else f"{v:.0f}" for v in d["labels_to_reach"].values())
        vr = d.get("vs_random")
        vb = d.get("vs_best_baseline")
        vr_t = "–" if not vr else f"{vr['verdict']} ({vr['mean_difference']:+.4f}, p={_p(vr['p_ttest'])})"
        vb_t = "–" if not vb else f"{vb['verdict']} vs {vb['baseline']} ({vb['mean_difference']:+.4f})"
        t = d["acquisition_time_s"]["mean"]
        lines.append(f"| {rank} | {s} | {_fmt(d['aulc'])} | {_fmt(d['final_accuracy'])} | {reach} | "
                     f"{'–' if t is None else f'{t:.3f}'} | {vr_t} | {vb_t} |")
    lines += ["", "## Where the Jacobian strategies stand", ""]
    for s in summary["ranking"]:
        if s.startswith("jacobian"):
            vr, vb = per[s].get("vs_random"), per[s].get("vs_best_baseline")
            parts = []
            if vr:
                parts.append(f"{vr['verdict']} against random (AULC {vr['mean_difference']:+.4f}, paired t-test "
                             f"p={_p(vr['p_ttest'])}, {vr['n_seeds']} seeds)")
            if vb:
                parts.append(f"{vb['verdict']} against the best baseline, {vb['baseline']} (AULC {vb['mean_difference']:+.4f}, "
                             f"p={_p(vb['p_ttest'])})")
            lines.append(f"- **{s}**: " + "; ".join(parts) + ".")
    c4 = summary.get("pointwise_check_c4") or {}
    if c4:
        lines += ["", "## Does the Jacobian norm carry signal on this data? (claim C4, first model)", "",
                  f"Spearman ρ(‖J(x)‖, loss) = {c4.get('spearman_rho_jacobian_loss'):.3f} (p={c4.get('p'):.2g}) and "
                  f"error-detection AUROC of ‖J‖ = {c4.get('error_auroc_jacobian'):.3f} on {c4.get('n')} test points "
                  f"(model test accuracy {c4.get('test_accuracy'):.3f})."]
    lines += ["", "Win/loss: paired t-test on per-seed AULC, p < 0.05; otherwise tie. With few seeds, ties are "
              "the honest default.", "", "![curves](curves.png)", "", "## Protocol", "", summary["protocol"], "",
              f"Options: `{json.dumps(cfg.to_dict())}`"]
    with atomic_open(Path(out) / "report.md", "w") as f:
        f.write("\n".join(lines) + "\n")
