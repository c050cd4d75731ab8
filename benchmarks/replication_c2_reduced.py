"""Reduced MNIST C2 experiment through library calls (sizes cut to fit a contended 2-core CPU): prints JSON.

Usage: python benchmarks/replication_c2_reduced.py  (needs MNIST at /work/shared/data or edit `root`).
"""
import json, sys, time
from dataclasses import replace
import torch
torch.set_num_threads(1)
from jacal.data import load_dataset
from jacal.population import train_population
from jacal.replication.config import PRESETS
from jacal.replication.c2 import plan_c2_models, c2_ellipses, measure_c2
from jacal.replication.c2_claims import c2_claims
from jacal.replication.store import TRAJECTORY_COLUMNS
from jacal.replication.report import _json_safe
t0 = time.time()
p = replace(PRESETS["standard"], c2_architectures=((128, 1), (128, 2)), c2_seeds=2, c2_steps=1000, c2_ellipses=20)
data = load_dataset("mnist", root="/work/shared/data", n_train=p.n_train, n_test=p.n_test, seed=0, clamp=True)
ell = c2_ellipses(data, p, 0)
planned = plan_c2_models(p, "mnist", 0)
models, trajs = [], []
for arch in p.c2_architectures:
    members = [m for m in planned if (m.config.width, m.config.depth) == arch]
    pop, res = train_population([m.config for m in members], data)
    mr, _, tr = measure_c2(pop, members, res, ell)
    models += mr
    trajs += [{c: (json.loads(v) if c in ("jacobian", "transitions", "sampled", "anchors") else v) for c, v in zip(TRAJECTORY_COLUMNS, r)} for r in tr]
    print(arch, [round(r["train_loss"], 5) for r in res], round(time.time() - t0), flush=True, file=sys.stderr)
claims, ex = c2_claims(trajs, models, max_train_loss=p.c2_max_train_loss, constructions=p.random_constructions)
out = {"wall_s": round(time.time() - t0, 1), "preset": "standard, C2 cut to 2 archs x 2 seeds, 1000 steps, 20 ellipses",
       "claims": [{"id": cid, "verdict": v["verdict"], "reason": v["reason"], "statistic": s} for cid, s, v in claims], "exclusions": ex}
print(json.dumps(_json_safe(out), indent=1))
