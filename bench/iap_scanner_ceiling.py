"""How far any pixel reader can get on scanner model and flip angle in the simulated DBC archive.

    OMP_NUM_THREADS=1 python bench/iap_scanner_ceiling.py [DEMO_OUT]      (DEMO_OUT: a `make demo` folder)

The simulator makes a series' pixels from its protocol, the patient and noise. Only some protocol
fields change the pixels beyond one global intensity scale, which the cache's per-slice max
normalization removes:

* visible: the magnet (1.5 or 3 T physics), the receive coil (channel count and element geometry,
  set by the scanner model: Signa HDxt and SIGNA HDx share one, Avanto and TrioTim another), the
  vendor reconstruction (k-space filter, intensity correction), the fat suppression method, partial
  Fourier, parallel imaging, patient position, acquisition and reconstruction matrix, FOV, slice
  thickness;
* not visible, or barely: TR, TE and flip angle above the Ernst angle scale every tissue alike
  (measured in part 2), the 1.494 vs 1.5 T (2.8936 vs 3 T) software value, the header-only scan
  options (FAST_GEMS, MP_GEMS), the contrast agent of a pre-contrast series.

Part 1 draws protocols exactly as ``simulate`` does (``sample_protocols`` with body widths of the
simulator's phantoms) and fits the best classifier of scanner model and flip angle from the visible
fields (Bayes by counting on 300,000 draws, each visible tuple's most frequent answer): its accuracy
on 100,000 fresh draws is the ceiling of a reader that sees the visible fields perfectly. The same
classifier with *every* protocol field but the target shows what the invisible ones would add.
With DEMO_OUT it also reads the demo's test split (the protocols of its patients, redrawn from seed
0) and prints the ceiling classifier's top-1 and the trained network's on those very slices.

Part 2 measures how much the timing fields change the pixels: one slice of 6 patients imaged
noise-free with a SIGNA HDx 1.5 T protocol and again with only its TR, its TE, or TR, TE and a flip
angle of 12 deg taken from a Signa HDxt 1.5 T protocol, each normalized by its max; the RMS change
inside the body against the RMS of the noise and of a coil swap (SIGNA EXCITE's coil) on the same slices.
"""
import dataclasses
import functools
import os
import sys
import time
from collections import Counter, defaultdict

import numpy as np
import pandas as pd

from mridomain.sim.breast import patient_phantom
from mridomain.sim.breast.attribution import acquire_series, replace_factors
from mridomain.sim.breast.protocols import Protocol, load_preset, protocol_from_entry, sample_protocols
from mridomain.sim.breast.simulate import draw_cohort
from mridomain.sim.breast.vendors import coil_positions

N_TRAIN, N_TEST = int(os.environ.get("CEILING_TRAIN", 300_000)), int(os.environ.get("CEILING_TEST", 100_000))


@functools.cache
def coil_signature(model: str, channels: int) -> str:
    """Channel count and element geometry of the receive coil (what the model name changes in the pixels)."""
    geometry = coil_positions(model, channels, 100.0, 0.0)
    return f"{channels}ch:" + ",".join(f"{v:.1f}" for v in geometry.ravel())


def visible(p: Protocol) -> tuple:
    """The protocol fields that change the stored pixels beyond one global intensity scale."""
    return ("3" if p.field_strength > 2 else "1.5", coil_signature(p.model, p.coil_channels), repr(p.recon),
            p.fatsat, p.partial_fourier, p.acceleration, p.patient_position, p.acq_freq, p.acq_phase,
            p.recon_matrix, p.fov, p.slice_thickness)


def everything_but(p: Protocol, target: str) -> tuple:
    """Every field, the invisible ones included, except the target (and the model for the flip angle,
    whose coil stays in through the visible fields)."""
    extra = (p.field_strength, p.scan_options, p.contrast_agent, p.tr, p.te)
    extra += (p.flip_angle,) if target != "flip_angle" else ()
    return visible(p) + extra


def target_of(p: Protocol, target: str) -> str:
    return p.model if target == "scanner_model" else f"{p.flip_angle:g}"


class BoostedReader:
    """Gradient boosting on the fields (categorical ones coded as categories): for tuples with
    continuous fields (TR, TE), which never repeat and so cannot be counted."""

    def fit(self, keys, ys):
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.text = [isinstance(v, str) for v in keys[0]]
        x = self.frame(keys)
        self.categories = {c: x[c].cat.categories for c, is_text in zip(x, self.text) if is_text}
        self.model = HistGradientBoostingClassifier(max_iter=200, categorical_features="from_dtype", random_state=0)
        self.model.fit(x, np.asarray(ys, dtype=object))
        self.unseen = 0
        return self

    def frame(self, keys) -> pd.DataFrame:
        x = pd.DataFrame([list(k) for k in keys])
        for c, is_text in zip(list(x), self.text):
            x[c] = x[c].astype(str).astype("category") if is_text else x[c].astype(float)
        return x

    def predict(self, keys):
        x = self.frame(keys)
        for c, cats in self.categories.items():
            x[c] = pd.Categorical(x[c].astype(str), categories=cats)
        return np.asarray(self.model.predict(x), dtype=object)


class CountingBayes:
    """Most frequent target per feature tuple; unseen tuples get the overall most frequent target."""

    def fit(self, keys, ys):
        counts = defaultdict(Counter)
        for k, y in zip(keys, ys):
            counts[k][y] += 1
        self.table = {k: c.most_common(1)[0][0] for k, c in counts.items()}
        self.default = Counter(ys).most_common(1)[0][0]
        self.unseen = 0
        return self

    def predict(self, keys):
        out = []
        for k in keys:
            if k not in self.table:
                self.unseen += 1
            out.append(self.table.get(k, self.default))
        return np.asarray(out, dtype=object)


def draw(n: int, seed: int, preset: dict, widths: np.ndarray) -> list[Protocol]:
    rng = np.random.default_rng([seed, 7])
    return sample_protocols(preset, n, rng, body_widths_mm=list(rng.choice(widths, n)))


def part1(preset: dict, demo_out: str | None) -> None:
    t0 = time.perf_counter()
    widths = np.array([2 * patient_phantom(11, i).torso_w for i in range(1500)])
    train, test = draw(N_TRAIN, 1, preset, widths), draw(N_TEST, 2, preset, widths)
    print(f"drew {N_TRAIN:,} + {N_TEST:,} protocols in {time.perf_counter() - t0:.0f} s", flush=True)
    demo = None
    if demo_out:
        from mridomain.data import SliceCache
        from mridomain.iap.run import IAPRun

        cache = SliceCache(f"{demo_out}/cache")
        test_rows = cache.table.iloc[cache.split("test")].reset_index(drop=True)
        patients = test_rows["patient_id"].str.rsplit("_", n=1).str[-1].astype(int)    # Breast_MRI_001 -> 1
        _, protocols, _ = draw_cohort(0, int(patients.max()), preset)
        demo_protocols = [protocols[i - 1] for i in patients]
        for iap in ("scanner_model", "flip_angle"):
            if [target_of(p, iap) for p in demo_protocols] != test_rows[iap].astype(str).tolist():
                raise SystemExit(f"{demo_out}: the redrawn protocols do not match the cache's {iap} labels")
        output = IAPRun.load(f"{demo_out}/run").forward(cache.images, indices=cache.split("test"), progress=False)
        demo = (test_rows, demo_protocols, output)
    rows = []
    for target in ("scanner_model", "flip_angle"):
        y_train = [target_of(p, target) for p in train]
        y_test = np.asarray([target_of(p, target) for p in test], dtype=object)
        majority = Counter(y_train).most_common(1)[0][0]
        if demo is not None:
            test_rows, demo_protocols, output = demo
            truth, net = test_rows[target].astype(str).to_numpy(), output.predicted(target)
        for name, features, reader in (
                ("visible fields", visible, CountingBayes),
                ("every field but the target", lambda p, t=target: everything_but(p, t), BoostedReader)):
            model = reader().fit([features(p) for p in train], y_train)
            pred = model.predict([features(p) for p in test])
            row = {"IAP": target, "reader": name, f"top-1 % ({len(test):,} draws)": 100 * (pred == y_test).mean(),
                   "unseen tuples %": 100 * model.unseen / len(test), "majority %": 100 * (y_test == majority).mean()}
            if demo is not None:
                row["ceiling on the demo's test slices %"] = 100 * (
                    model.predict([features(p) for p in demo_protocols]) == truth).mean()
                row["network on the same slices %"] = 100 * (net == truth).mean()
            rows.append(row)
            if name == "visible fields":
                wrong = pred != y_test
                pairs = Counter(zip(y_test[wrong], pred[wrong])).most_common(4)
                print(f"{target}: the ceiling's most frequent confusions (truth -> answer, of {len(test):,}): "
                      + "; ".join(f"{a} -> {b} {100 * n / len(test):.2f} %" for (a, b), n in pairs), flush=True)
                if demo is not None:
                    net_wrong = net != truth
                    pairs = Counter(zip(truth[net_wrong], net[net_wrong])).most_common(4)
                    print(f"{target}: the network's confusions on the demo's {len(truth)} test slices: "
                          + "; ".join(f"{a} -> {b} {n}" for (a, b), n in pairs), flush=True)
    print(pd.DataFrame(rows).round(2).to_string(index=False))
    print(f"part 1: {time.perf_counter() - t0:.0f} s", flush=True)


def part2(preset: dict) -> None:
    t0 = time.perf_counter()
    entries = {e["name"]: e for e in preset["scanners"]}
    rng = np.random.default_rng(5)
    swaps = {"TR of a Signa HDxt 1.5 T": ("tr",), "TE of a Signa HDxt 1.5 T": ("te",),
             "TR, TE and flip angle 12 (not 10)": ("tr", "te", "flip_angle")}
    change: dict[str, list] = {name: [] for name in [*swaps, "coil of a SIGNA EXCITE", "noise"]}
    for i in range(6):
        ph = patient_phantom(21, i)
        hdx = protocol_from_entry(entries["ge_signa_hdx_15t"], rng)
        hdxt = protocol_from_entry(entries["ge_signa_hdxt_15t"], rng)
        excite = protocol_from_entry(entries["ge_signa_excite_15t"], rng)
        renders: dict = {}

        def image(p: Protocol, noise: bool = False, ph=ph, renders=renders) -> np.ndarray:
            v = acquire_series(ph, p, slices=1, slab="spread", noise=noise, renders=renders).volume[0]
            return v / v.max()

        base = image(hdx)
        body = base > 0.05
        hdxt = dataclasses.replace(hdxt, flip_angle=12.0)
        others = {name: image(dataclasses.replace(hdx, **{f: getattr(hdxt, f) for f in fields}))
                  for name, fields in swaps.items()}
        others["coil of a SIGNA EXCITE"] = image(replace_factors(hdx, excite, "coil"))
        others["noise"] = image(hdx, noise=True)
        for name, other in others.items():
            change[name].append(float(np.sqrt(np.mean((other - base)[body] ** 2))))
    print("\nRMS change of the max-normalized slice inside the body, SIGNA HDx 1.5 T protocol, 6 patients "
          "(mean, min-max):")
    for name, v in change.items():
        print(f"  {name:45s} {100 * np.mean(v):6.3f} % of the max ({100 * min(v):.3f}-{100 * max(v):.3f})")
    print(f"part 2: {time.perf_counter() - t0:.0f} s", flush=True)


def main() -> None:
    preset = load_preset("dbc")
    t0, c0 = time.perf_counter(), time.process_time()
    part1(preset, sys.argv[1] if len(sys.argv) > 1 else None)
    part2(preset)
    print(f"total {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} CPU s; load average "
          + open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
