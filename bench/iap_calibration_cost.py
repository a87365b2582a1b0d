"""Is a cheaper outlier-exposure calibration the same verdict? Default vs cheap settings on one run.

    OMP_NUM_THREADS=1 python bench/iap_calibration_cost.py RUN CACHE '{"max_reference": 600, "max_transformed": 400}'
"""
import json
import shutil
import sys
import time
from pathlib import Path
import numpy as np
from mridomain.iap.trust import calibrate
from mridomain.iap.run import IAPRun
from mridomain.iap.cache import open_cache, split_indices
from mridomain.iap.outliers import transformed_outliers, synthetic_outliers, brain_outliers
run, cache = Path(sys.argv[1]), open_cache(sys.argv[2])
settings = {"default": {}, "cheap": json.loads(sys.argv[3])}
res, verdicts = {}, {}
test = split_indices(cache, "test")
for name, kw in settings.items():
    r = Path(f"/tmp/iap28/cal_{name}")
    shutil.rmtree(r, ignore_errors=True)
    shutil.copytree(run, r)
    from mridomain.iap.outliers import _brain_slices
    _brain_slices.cache_clear()          # each setting pays for its brain simulation
    t, c = time.time(), time.process_time()
    calibrate(r, cache, progress=False, **kw)
    res[name] = {"wall_s": round(time.time() - t, 1), "cpu_s": round(time.process_time() - c, 1),
                 "load": open("/proc/loadavg").read().split()[:3]}
    p = IAPRun.load(r)
    if name == "default":
        rng = np.random.default_rng(12345)
        tr_img, tr_k = transformed_outliers(np.asarray(cache.images[test]), p.preprocess, rng)
        sy_img, sy_k = synthetic_outliers(100, p.preprocess, rng)
        br_img, br_k = brain_outliers(1, 4, p.preprocess, seed=99)
        probe = {"test (in-domain)": np.asarray(cache.images[test], np.float32), "transformed test slices": tr_img,
                 "synthetic": sy_img, "brain (other subject)": br_img}
    verdicts[name] = {k: p.forward(v).in_domain for k, v in probe.items()}
    res[name]["in_domain_share"] = {k: round(float(v.mean()), 4) for k, v in verdicts[name].items()}
res["agreement"] = {k: round(float((verdicts["default"][k] == verdicts["cheap"][k]).mean()), 4) for k in probe}
print(json.dumps(res, indent=1))
