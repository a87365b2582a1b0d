"""How much of each IAP the k-space view alone tells: a logistic regression on the view (train split) -> top-1 on test.

    OMP_NUM_THREADS=1 python bench/iap_view_probe.py CACHE     (a cache prepared with --kspace-view)
"""
import sys
import time

import numpy as np
from mridomain.data import SliceCache
from mridomain.data.kspace import split_view
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline
c = SliceCache(sys.argv[1])
t = c.table
_, v = split_view(np.asarray(c.images, np.float32), c.kspace_view)
X = v.reshape(len(v), -1)
tr, te = c.split("train"), c.split("test")
t0 = time.process_time()
for iap in ("acquisition_matrix", "scanner_model", "manufacturer", "field_strength", "flip_angle", "patient_position", "slice_thickness", "fov"):
    y = t[iap].astype(str).to_numpy()
    m = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(X[tr], y[tr])
    acc = (m.predict(X[te]) == y[te]).mean()
    maj = (y[te] == max(set(y[tr]), key=list(y[tr]).count)).mean()
    print(f"{iap:20s} view-only top-1 {100*acc:5.1f}%  (majority {100*maj:5.1f}%)", flush=True)
print("cpu s", time.process_time() - t0, open("/proc/loadavg").read())
