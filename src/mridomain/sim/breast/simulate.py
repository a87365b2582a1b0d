"""Simulate a DBC-like multi-vendor archive: DICOM in TCIA layout, features sheet, boxes, manifest."""
from __future__ import annotations

import csv
import datetime as _dt
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from mridomain.errors import MridomainError, InvalidArgumentError
from mridomain.parallel import parallel_map
from mridomain.sim.breast import acquisition as acq
from mridomain.sim.breast.dicom_writer import SeriesInfo, series_folder_names, uid, write_slice
from mridomain.sim.breast.phantom import Phantom, draw_stage, make_phantom, phantom_parameters
from mridomain.sim.physics import AGENT_MOLARITY, STANDARD_DOSE_MMOL_PER_KG
from mridomain.sim.breast.protocols import Protocol, load_preset, sample_protocols

ORDINALS = ["pre", "1st pass", "2nd pass", "3rd pass", "4th pass", "5th pass", "6th pass"]
#: mammographic density code of DBC's sheet for each phantom density class
DENSITY_CODE = {"fatty": 5, "scattered": 1, "heterogeneous": 0, "extremely dense": 4}


@dataclass
class SimulationResult:
    """What :func:`simulate` wrote. ``manifest`` has one row per series (ground truth)."""

    out: Path
    manifest: pd.DataFrame
    dicom_root: Path
    features_csv: Path
    annotations_csv: Path
    manifest_path: Path
    n_files: int
    seconds: float
    stage_seconds: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)

    def summary(self) -> str:
        """A few lines: counts, vendors, where things are."""
        m = self.manifest
        pre = m[m["phase"] == 0]
        lines = [f"Simulated {pre['patient_id'].nunique()} patients, {len(m)} series, {self.n_files} "
                 f"DICOM files in {self.seconds:.1f} s -> {self.dicom_root}"]
        if len(pre):
            for col in ("manufacturer", "scanner_model", "field_strength", "patient_position",
                        "contrast_agent"):
                vc = pre[col].value_counts()
                lines.append(f"  {col}: " + ", ".join(f"{k} {v}" for k, v in vc.items()))
            lines.append(f"  tumours: {int(pre['tumor_present'].sum())}/{len(pre)}; density: "
                         + ", ".join(f"{k} {v}" for k, v in pre['density'].value_counts().items()))
            if "cohort" in pre and (pre["cohort"] != "population").any():
                g = pre["cohort_group"].value_counts()
                lines.append(f"  cohort: {pre['cohort'].iloc[0]} (" + ", ".join(f"{k} {v}" for k, v in g.items()) + ")")
            if "t_stage" in pre:
                t = pre.loc[pre["tumor_present"], "t_stage"].value_counts().sort_index()
                lines.append("  T stage: " + ", ".join(f"T{k} {v}" for k, v in t.items())
                             + f"; node positive {int((pre['n_stage'] > 0).sum())}, M1 {int(pre['m_stage'].sum())}")
        for s, why in self.skipped:
            lines.append(f"  skipped {s}: {why}")
        lines.append(f"  features: {self.features_csv.name}, boxes: {self.annotations_csv.name}, "
                     f"manifest: {self.manifest_path.name}")
        return "\n".join(lines)


def patient_id(i: int) -> str:
    """DBC naming: Breast_MRI_001, ..."""
    return f"Breast_MRI_{i + 1:03d}"


def patient_phantom(seed: int, i: int, stage: dict | None = None, anatomies: int | None = None) -> Phantom:
    """The phantom of patient ``i`` for a given dataset seed (deterministic); ``stage`` forces a
    carcinoma of that :func:`~mridomain.sim.breast.phantom.draw_stage` result (a cohort sampled by stage).

    ``anatomies``: a controlled study of anatomical variety. Patient ``i`` then gets the whole anatomy
    (body, breasts, heart, texture, lesion) of patient ``i % anatomies``, so the cohort holds only that
    many bodies; None (the default) gives every patient their own."""
    if anatomies is not None and anatomies < 1:
        raise InvalidArgumentError(f"anatomies must be >= 1 or None (got {anatomies})")
    a = i if anatomies is None else i % anatomies
    return make_phantom(np.random.default_rng([seed, a, 0]), patient_index=a, seed=seed,
                        tumor=True if stage is not None else None, forced_stage=stage)


#: ``population``: patients as they come (a carcinoma in 90 %, T3/T4 ~9 %: :func:`draw_stage`).
#: ``t-stage-case-control``: an enriched cohort for the T > 2 task, as case-control studies are
#: sampled (e.g. Schlesselman, Case-Control Studies, 1982): every patient has a carcinoma, and within
#: each manufacturer patients alternate between cases (T3/T4) and controls (T1/T2) in index order,
#: so each scanner domain holds as many cases as controls (within one). Within each group the stage,
#: size, margin, necrosis and N/M are draw_stage's own distribution (draws from a stream of their
#: own, [seed, i, 3], kept until the group matches); nothing else about a patient changes.
COHORTS = ("population", "t-stage-case-control")
#: the T stage that separates cases from controls in the case-control cohort (the paper's T > 2)
CASE_CONTROL_T = 2


def cohort_stage(seed: int, i: int, case: bool, threshold: int = CASE_CONTROL_T) -> dict:
    """A stage of draw_stage's distribution restricted to cases (T > threshold) or controls."""
    rng = np.random.default_rng([seed, i, 3])
    for _ in range(100000):
        st = draw_stage(rng)
        if (st["t"] > threshold) == case:
            return st
    raise MridomainError(f"no {'case' if case else 'control'} stage drawn for patient {i}")  # pragma: no cover


def draw_cohort(seed: int, n_patients: int, data, cohort: str = "population",
                anatomies: int | None = None) -> tuple[list, list, list]:
    """Phantoms, protocols and cohort group (``case`` / ``control`` / None) of every patient, as
    :func:`simulate` draws them (also used to image an archive's patients again)."""
    if cohort not in COHORTS:
        raise InvalidArgumentError(f"unknown cohort {cohort!r}; use one of {COHORTS}")
    phantoms = [patient_phantom(seed, i, anatomies=anatomies) for i in range(n_patients)]
    # a forced stage changes no other draw of the phantom, so the body widths (and protocols) stay
    protocols = sample_protocols(data, n_patients, np.random.default_rng([seed, 99]),
                                 body_widths_mm=[2 * ph.torso_w for ph in phantoms])
    groups: list = [None] * n_patients
    if cohort == "t-stage-case-control":
        seen: dict[str, int] = {}
        for i, p in enumerate(protocols):
            k = seen.get(p.manufacturer, 0)
            seen[p.manufacturer] = k + 1
            groups[i] = "case" if k % 2 == 0 else "control"
            phantoms[i] = patient_phantom(seed, i, cohort_stage(seed, i, groups[i] == "case"), anatomies)
    return phantoms, protocols, groups


def contrast_volume_ml(p: Protocol, weight_kg: float) -> float:
    """Injected volume at 0.1 mmol/kg: dose / formulation molarity (Gadavist 1.0 M, others 0.5 M)."""
    return round(STANDARD_DOSE_MMOL_PER_KG * weight_kg / AGENT_MOLARITY.get(p.agent, 0.5), 1)


def _series_infos(seed: int, i: int, ph: Phantom, p: Protocol, ctx: acq.ExamContext,
                  z_written: np.ndarray, phases: int) -> list[SeriesInfo]:
    pid = patient_id(i)
    study_uid = uid(seed, pid, "study")
    frame_uid = uid(seed, pid, "frame")
    date = _dt.date(2000, 1, 3) + _dt.timedelta(days=int(np.random.default_rng([seed, i, 2]).integers(0, 5000)))
    n = p.recon_matrix
    d = p.pixel_mm
    mirrored = p.patient_position.startswith("HF")
    x0 = (n / 2 - 0.5) * d if mirrored else -(n / 2 - 0.5) * d
    y0 = ctx.y_center - (n / 2 - 0.5) * d
    out = []
    for k in range(phases):
        if p.manufacturer == "GE":
            desc = p.series_description if k == 0 else f"{p.series_description} Ph{k + 1}"
        else:
            desc = f"{p.series_description}_{ORDINALS[min(k, len(ORDINALS) - 1)].replace(' ', '')}"
        out.append(SeriesInfo(
            patient_id=pid, patient_index=i, study_uid=study_uid,
            series_uid=uid(seed, pid, "series", k), frame_uid=frame_uid, series_number=3 + k,
            phase=k, n_phases=phases, study_date=f"{date:%Y%m%d}", weight_kg=ph.weight_kg,
            z_positions=z_written, x0=float(x0), y0=float(y0), mirrored=mirrored,
            contrast_volume_ml=None if p.contrast_agent == "absent" else contrast_volume_ml(p, ph.weight_kg),
            description=desc))
    return out


SLAB_MODES = ("spread", "tumor")


def _exam(seed: int, i: int, p: Protocol, slices: int, slab: str = "spread", stage: dict | None = None,
          anatomies: int | None = None):
    ph = patient_phantom(seed, i, stage, anatomies)
    ctx = acq.exam_context(ph, p, np.random.default_rng([seed, i, 1]))
    z = ph.slab(slices, p.slice_thickness, mode=slab)
    # written order ascends along the slice normal (+z for FFP storage, -z for mirrored HFP storage)
    z_written = z[::-1].copy() if p.patient_position.startswith("HF") else z
    return ph, ctx, z_written


def _run_task(task: dict) -> dict:
    """Worker: render, acquire and write a chunk of slices of one patient (all phases)."""
    seed, i, p, slices, phases = task["seed"], task["i"], task["protocol"], task["slices"], task["phases"]
    out = Path(task["out"])
    t0 = time.perf_counter()
    try:
        ph, ctx, z_written = _exam(seed, i, p, slices, task.get("slab", "spread"), task.get("stage"),
                                     task.get("anatomies"))
        infos = _series_infos(seed, i, ph, p, ctx, z_written, phases)
        boxes = []
        written = 0
        t_write = 0.0
        for info in infos:
            study, series = series_folder_names(info, p)
            folder = out / "dicom" / info.patient_id / study / series
            folder.mkdir(parents=True, exist_ok=True)
            for k in task["indices"]:
                img, tumor = acq.acquire_slice(ph, p, ctx, float(z_written[k]), k, phase=info.phase)
                tw = time.perf_counter()
                write_slice(folder, info, p, k, acq.to_stored(img, p))
                t_write += time.perf_counter() - tw
                written += 1
                if info.phase == 0:
                    mask = tumor > 0.5
                    if mask.any():
                        rows = np.where(mask.any(axis=1))[0]
                        cols = np.where(mask.any(axis=0))[0]
                        boxes.append((k, int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])))
        stages = dict(ctx.stage_s)
        stages["write"] = t_write
        # phantom, exam context and folders (the texture is built lazily inside "render")
        stages["setup"] = time.perf_counter() - t0 - sum(stages.values())
        return {"i": i, "written": written, "boxes": boxes, "stages": stages, "error": None,
                "n_images": len(task["indices"]) * phases}
    except (MridomainError, ValueError, OSError) as err:  # skip-and-report this patient chunk
        return {"i": i, "written": 0, "boxes": [], "stages": {}, "error": f"{type(err).__name__}: {err}",
                "n_images": len(task["indices"]) * phases}


def _code_maps() -> tuple[list[str], dict[str, dict[str, str]], list[str]]:
    """Column names, {column: {label: code}} and the raw code row of the shipped DBC category map."""
    # via the top-level package: importing mridomain.data here would pull in the whole data stack
    text = resources.files("mridomain").joinpath("data/resources/dbc_clinical_feature_categories.csv")
    with text.open("r", encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    names, codes = rows[0], rows[1]
    maps: dict[str, dict[str, str]] = {}
    for name, spec in zip(names, codes):
        if "=" in spec and not spec.lstrip().startswith("{") and not spec.lstrip().startswith("("):
            m = {}
            for part in spec.split(","):
                if "=" in part:
                    label, code = part.rsplit("=", 1)
                    m[label.strip()] = code.strip()
            maps[name] = m
    return names, maps, codes


def _agent_label(agent: str, labels: dict[str, str]) -> str | None:
    if agent == "not stated":
        return next((c for lab, c in labels.items() if lab.startswith("Name of agent not stated")), None)
    if agent == "absent":
        return next((c for lab, c in labels.items() if "Tag Absent" in lab), None)
    return labels.get(agent)


def _nearest_code(value: float, labels: dict[str, str]) -> str:
    keys = sorted(labels, key=lambda s: abs(float(s) - value))
    return labels[keys[0]] if keys else ""


#: features-sheet columns (DBC's exact names) filled from each patient's stage
STAGE_COLUMNS = {
    "Staging(Tumor Size)# [T]": "t_stage",
    "Staging(Nodes)#(Nx replaced by -1)[N]": "n_stage",
    "Staging(Metastasis)#(Mx -replaced by -1)[M]": "m_stage",
    "Metastatic at Presentation (Outside of Lymph Nodes)": "m_stage",
    "Lymphadenopathy or Suspicious Nodes": "node_positive",
    "Skin/Nipple Invovlement": "skin_involvement",
    "Pec/Chest Involvement": "chest_involvement",
}


def write_features_csv(path: Path, rows: list[dict]) -> None:
    """DBC-style Clinical_and_Other_Features: group row, column names, category-code row, patients."""
    names, maps, codes = _code_maps()
    # a cohort sampled by stage says so in a column of its own (not a DBC column; a population
    # archive keeps DBC's exact layout)
    cohort = any(r.get("cohort", "population") != "population" for r in rows)
    extra = ["Cohort (simulated)"] if cohort else []
    header = ["Patient ID"] + names + extra
    groups = [""] * len(header)
    groups[0] = "Patient Information"
    groups[1] = "MRI Technical Information"
    if "Date of Birth (Days)" in header:
        groups[header.index("Date of Birth (Days)")] = "Demographics"
    if "Mol Subtype" in header:
        groups[header.index("ER")] = "Tumor Characteristics"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(groups)
        w.writerow(header)
        w.writerow([""] + codes + (["t-stage-case-control: case (T > 2) | control (T <= 2)"] if cohort else []))
        for r in rows:
            p: Protocol = r["protocol"]
            line = {n: "" for n in names}

            def code(col, label, line=line):
                m = maps.get(col, {})
                line[col] = m.get(label, "")

            code("Manufacturer", p.manufacturer_dicom)
            code("Manufacturer Model Name", p.model)
            code("Scan Options", p.scan_options)
            code("Field Strength (Tesla)", f"{p.field_strength:g}")
            code("Patient Position During MRI", p.patient_position)
            line["Contrast Agent"] = _agent_label(p.contrast_agent, maps["Contrast Agent"]) or ""
            if r["volume_ml"] is not None:
                line["Contrast Bolus Volume (mL)"] = _nearest_code(r["volume_ml"], maps["Contrast Bolus Volume (mL)"])
            line["TR (Repetition Time)"] = f"{p.tr:g}"
            line["TE (Echo Time)"] = f"{p.te:g}"
            code("Acquisition Matrix", f"{p.acq_freq} X {p.acq_phase}")
            code("Slice Thickness ", f"{p.slice_thickness:g}")
            code("Rows", str(p.recon_matrix))
            code("Columns", str(p.recon_matrix))
            if p.manufacturer == "GE":
                code("Reconstruction Diameter ", f"{p.fov:g}")
            code("Flip Angle \n", f"{p.flip_angle:g}")
            code("FOV Computed (Field of View) in cm ", f"{p.fov:g}")
            if "Breast Density" in line:
                line["Breast Density"] = str(DENSITY_CODE[r["density"]])
            if r["tumor_side"]:
                line["Tumor Location"] = r["tumor_side"]
                line["Tumor Size (cm)"] = f"{r['tumor_diameter_mm'] / 10:.1f}"
            # clinical stage with DBC's codes: T 0-4 (0 = no primary tumour), N 0-3, M 0/1, and
            # the involvement flags that decide T4 ({0 = no, 1 = yes})
            for col, key in STAGE_COLUMNS.items():
                if col in line:
                    line[col] = str(int(r[key]))
            w.writerow([r["patient_id"]] + [line[n] for n in names] + ([r["cohort"]] if cohort else []))


def simulate(out: str | Path, n_patients: int = 20, seed: int = 0, slices: int = 16,
             preset: str | Path = "dbc", phases: int = 1, workers: int | None = None,
             progress: bool = True, slab: str = "spread", cohort: str = "population",
             anatomies: int | None = None) -> SimulationResult:
    """Simulate ``n_patients`` DCE breast MRI exams and write them in DBC's TCIA layout.

    Each patient gets one protocol sampled from ``preset`` ("dbc" or a YAML file) and ``phases``
    series (phase 0 pre-contrast, then post-contrast). Writes ``out/dicom/...``,
    ``Clinical_and_Other_Features.csv``, ``Annotation_Boxes.csv`` and ``manifest.parquet``.
    Slices are processed in parallel and written as soon as they are reconstructed.
    ``slab``: "spread" (default) spreads a small series over the breasts with one slice through
    the lesion; "tumor" writes ``slices`` contiguous slices (spacing = thickness) centred on the
    lesion, e.g. ``slices=5`` for a 47 x 47 x 5 crop around the tumour box.
    ``cohort``: ``population`` (default) or ``t-stage-case-control`` (:data:`COHORTS`: as many
    T3/T4 cases as T1/T2 controls per manufacturer); written to the manifest (``cohort``,
    ``cohort_group``) and the features sheet (``Cohort (simulated)``).
    ``anatomies``: give the cohort only that many bodies (patient ``i`` has patient ``i % anatomies``'s
    anatomy; protocols, noise and everything else are drawn as usual), for studies of how much a
    model's accuracy is lost to anatomical variety; None (default): every patient their own.
    """
    t_start = time.perf_counter()
    if slab not in SLAB_MODES:
        raise InvalidArgumentError(f"unknown slab {slab!r}; use one of {SLAB_MODES}")
    if n_patients < 1 or slices < 1 or phases < 1:
        raise InvalidArgumentError(f"n_patients, slices and phases must be >= 1 (got {n_patients}, {slices}, {phases})")
    out = Path(out)
    (out / "dicom").mkdir(parents=True, exist_ok=True)
    data = load_preset(preset)
    phantoms, protocols, groups = draw_cohort(seed, n_patients, data, cohort, anatomies)
    stages = [None if g is None else cohort_stage(seed, i, g == "case") for i, g in enumerate(groups)]
    workers = max(1, min(os.cpu_count() or 1, 8) if workers is None else int(workers))
    # one task per patient (its texture planes, coil and signal maps are built once and shared by
    # all its slices and phases); only when there are fewer than two patients per worker are a
    # patient's slices split so every worker stays busy (each chunk then rebuilds what it needs)
    n_chunks = max(1, min(slices, -(-2 * workers // n_patients))) if workers > 1 else 1
    bounds = np.linspace(0, slices, n_chunks + 1).astype(int)
    tasks = [{"seed": seed, "i": i, "protocol": protocols[i], "slices": slices, "phases": phases,
              "out": str(out), "indices": list(range(bounds[c], bounds[c + 1])), "slab": slab, "stage": stages[i],
              "anatomies": anatomies}
             for i in range(n_patients) for c in range(n_chunks) if bounds[c + 1] > bounds[c]]
    results = list(parallel_map(_run_task, tasks, workers=workers, total=len(tasks), batch_size=1,
                                progress=progress, desc="simulate", unit="img",
                                advance=lambda r: r["n_images"], advance_total=n_patients * slices * phases))

    skipped, stage = [], {}
    boxes: dict[int, list] = {}
    failed = set()
    n_files = 0
    for r in results:
        n_files += r["written"]
        if r["error"]:
            skipped.append((patient_id(r["i"]), r["error"]))
            failed.add(r["i"])
        boxes.setdefault(r["i"], []).extend(r["boxes"])
        for k, v in r["stages"].items():
            stage[k] = stage.get(k, 0.0) + v

    manifest_rows, feature_rows, box_rows = [], [], []
    for i in range(n_patients):
        if i in failed:
            continue
        ph, p = phantoms[i], protocols[i]
        ctx = acq.exam_context(ph, p, np.random.default_rng([seed, i, 1]))
        z = ph.slab(slices, p.slice_thickness, mode=slab)
        z_written = z[::-1].copy() if p.patient_position.startswith("HF") else z
        infos = _series_infos(seed, i, ph, p, ctx, z_written, phases)
        params = phantom_parameters(ph)
        vol = None if p.contrast_agent == "absent" else contrast_volume_ml(p, ph.weight_kg)
        for info in infos:
            study, series = series_folder_names(info, p)
            row = {"patient_id": info.patient_id, "study_uid": info.study_uid,
                   "series_uid": info.series_uid, "phase": info.phase,
                   "folder": str(Path("dicom") / info.patient_id / study / series),
                   "series_description": info.description, "n_slices": slices}
            row.update(p.iaps())
            row.update({"agent_injected": p.agent, "site": p.site, "fatsat_method": p.fatsat,
                        "partial_fourier": p.partial_fourier, "acceleration": p.acceleration,
                        "recon_matrix": p.recon_matrix, "pixel_spacing_mm": p.pixel_mm,
                        "coil_channels": p.coil_channels, "contrast_volume_ml": vol, "cohort": cohort,
                        "cohort_group": groups[i],
                        "slice_spacing_mm": float(abs(np.diff(z).mean())) if slices > 1 else p.slice_thickness})
            row.update(params)
            manifest_rows.append(row)
        feature_rows.append({"patient_id": patient_id(i), "protocol": p, "volume_ml": vol,
                             "density": ph.density, "tumor_side": params["tumor_side"],
                             "tumor_diameter_mm": params["tumor_diameter_mm"],
                             "t_stage": params["t_stage"], "n_stage": params["n_stage"],
                             "m_stage": params["m_stage"], "node_positive": int(params["n_stage"] > 0),
                             "skin_involvement": int(params["tumor_invasion"] == "skin"),
                             "chest_involvement": int(params["tumor_invasion"] == "chest wall"),
                             "cohort": cohort if groups[i] is None else f"{cohort}: {groups[i]}"})
        b = boxes.get(i, [])
        if b:
            a = np.array(b)
            box_rows.append({"Patient ID": patient_id(i), "Start Row": int(a[:, 1].min()) + 1,
                             "End Row": int(a[:, 2].max()) + 1, "Start Column": int(a[:, 3].min()) + 1,
                             "End Column": int(a[:, 4].max()) + 1, "Start Slice": int(a[:, 0].min()) + 1,
                             "End Slice": int(a[:, 0].max()) + 1})
    manifest = pd.DataFrame(manifest_rows)
    if len(manifest):
        manifest = manifest.sort_values(["patient_id", "phase"]).reset_index(drop=True)
    manifest_path = out / "manifest.parquet"
    manifest.to_parquet(manifest_path, index=False)
    features_csv = out / "Clinical_and_Other_Features.csv"
    write_features_csv(features_csv, feature_rows)
    annotations_csv = out / "Annotation_Boxes.csv"
    pd.DataFrame(box_rows, columns=["Patient ID", "Start Row", "End Row", "Start Column", "End Column",
                                    "Start Slice", "End Slice"]).to_csv(annotations_csv, index=False)
    return SimulationResult(out=out, manifest=manifest, dicom_root=out / "dicom",
                            features_csv=features_csv, annotations_csv=annotations_csv,
                            manifest_path=manifest_path, n_files=n_files,
                            seconds=time.perf_counter() - t_start, stage_seconds=stage, skipped=skipped)
