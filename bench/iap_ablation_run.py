"""Issue 28 ablations: one variant of the cpu preset trained on a cache, Table 1 top-1 on its test split.

    SKIP_CALIBRATE=1 OMP_NUM_THREADS=1 python bench/iap_ablation_run.py CACHE NAME '{"kspace_view": false, "epochs": 8, "input_size": 160}'

A "seed" among the overrides is the training seed (default 0); the cache's split is the cache's own.

Writes /tmp/iap28/runs/NAME/{run,eval,result.json} (wall and CPU seconds, load averages, top-1 per IAP).
"""
import json
import sys
import time
from pathlib import Path
import os

from mridomain.iap import evaluate, train

# small fast ablation runs: top-1 does not depend on the trust calibration (temperatures keep the
# argmax; evaluate reports top-1 of every slice), so SKIP_CALIBRATE=1 skips its cost
CALIBRATE = not os.environ.get("SKIP_CALIBRATE")
cache = Path(sys.argv[1])
name = sys.argv[2]
overrides = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
seed = int(overrides.pop("seed", 0))
out = Path("/tmp/iap28/runs") / name
t0, c0 = time.time(), time.process_time()
load0 = open("/proc/loadavg").read().split()[:3]
res = train(cache, out / "run", preset="cpu", seed=seed, progress=False, calibrate=CALIBRATE, **overrides)
t1, c1 = time.time(), time.process_time()
rep = evaluate(out / "run", cache=cache, split="test", out=out / "eval", progress=False)
t2, c2 = time.time(), time.process_time()
top1 = {r["iap"]: r.get("top1") for r in rep.rows}
rec = {"name": name, "seed": seed, "overrides": overrides, "top1": top1, "train_wall_s": t1 - t0, "train_cpu_s": c1 - c0,
       "eval_wall_s": t2 - t1, "eval_cpu_s": c2 - c1, "best_epoch": res.best_epoch,
       "load_start": load0, "load_end": open("/proc/loadavg").read().split()[:3]}
(out / "result.json").write_text(json.dumps(rec, indent=1, default=str))
print(json.dumps(rec, default=str))
print(rep.to_markdown())
