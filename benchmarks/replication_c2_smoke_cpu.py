"""CPU seconds of the smoke preset's C2 experiment (new in sweep version 4) and of the v3 per-group C2 measurement it replaces; prints JSON."""
import json, time
import torch
from jacal.data import load_dataset
from jacal.population import train_population, population_jacobian_norm, population_transitions, ModelConfig
from jacal.replication.config import PRESETS
from jacal.replication.c2 import plan_c2_models, c2_ellipses, measure_c2
p = PRESETS["smoke"]
data = load_dataset("digits", n_train=p.n_train, seed=0, clamp=True)
t = time.process_time(); ell = c2_ellipses(data, p, 0); out = {"ellipses_cpu_s": time.process_time() - t}
planned = plan_c2_models(p, "digits", 0)
train = meas = 0.0
losses = []
for arch in p.c2_architectures:
    members = [m for m in planned if (m.config.width, m.config.depth) == arch]
    t = time.process_time(); pop, res = train_population([m.config for m in members], data); train += time.process_time() - t
    t = time.process_time(); measure_c2(pop, members, res, ell); meas += time.process_time() - t
    losses += [r["train_loss"] for r in res]
out.update(c2_train_cpu_s=train, c2_measure_cpu_s=meas, c2_train_losses=losses)
# the v3 sweep measured 3 kinds x 2 ellipses x 120 points on every group; one group of 8 (128x2)
cfgs = [ModelConfig(width=128, depth=2, steps=1, seed=s) for s in range(8)]
pop, _ = train_population(cfgs, data)
pts = torch.randn(120, 64)
t = time.process_time()
for _ in range(6):
    population_jacobian_norm(pop, pts); population_transitions(pop, pts)
out["v3_c2_measure_per_group_cpu_s"] = time.process_time() - t
print(json.dumps(out))
