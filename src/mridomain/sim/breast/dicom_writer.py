"""Write simulated slices as MR Image Storage DICOM files, with headers as the scanners write them."""
from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID, generate_uid

from mridomain.sim.physics import GAMMA_MHZ_PER_T
from mridomain.sim.breast.protocols import Protocol

#: Root for every simulated UID (pydicom's registered example root).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."

SOFTWARE = {"GE": "24\\LX\\MR Software release:HD16.0_V02_1131.a", "SIEMENS": "syngo MR B17"}
SEQUENCE_NAME = {"GE": "efgre3d", "SIEMENS": "*fl3d1"}
RECEIVE_COIL = {"GE": "8HRBRAIN", "SIEMENS": "BreastMatrix"}


def uid(*parts) -> str:
    """Deterministic UID from the given parts (same parts, same UID)."""
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(p) for p in parts])


@dataclass
class SeriesInfo:
    """Identity and geometry of one series."""

    patient_id: str
    patient_index: int
    study_uid: str
    series_uid: str
    frame_uid: str
    series_number: int
    phase: int
    n_phases: int
    study_date: str          # YYYYMMDD
    weight_kg: float
    z_positions: np.ndarray  # slice centres (mm) in written order
    x0: float                # patient x of the first stored column centre
    y0: float                # patient y of the first stored row centre
    mirrored: bool           # HFP: stored columns run towards the patient's right
    contrast_volume_ml: float | None
    description: str


def series_folder_names(info: SeriesInfo, p: Protocol) -> tuple[str, str]:
    """TCIA-style study and series folder names."""
    d = _dt.datetime.strptime(info.study_date, "%Y%m%d")
    study = f"{d:%m-%d-%Y}-NA-MRI BREAST BILATERAL W WO CONTRAST-{int(info.study_uid[-5:]) % 100000:05d}"
    series = f"{info.series_number}.000000-{info.description}-{int(info.series_uid[-5:]) % 100000:05d}"
    return study, series.replace("/", "_")


def build_dataset(info: SeriesInfo, p: Protocol, k: int, pixels: np.ndarray) -> Dataset:
    """The complete dataset for slice ``k`` (0-based, written order) of a series."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = info.study_date
    t = 90000 + info.phase * 130
    ds.StudyTime = "090000"
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"{t // 10000:02d}{t // 100 % 100:02d}{t % 100:02d}"
    ds.AccessionNumber = f"{info.patient_index + 1:08d}"
    ds.Modality = "MR"
    ds.Manufacturer = p.manufacturer_dicom
    ds.InstitutionName = "Simulated Breast Imaging Center"
    ds.StudyDescription = "MRI BREAST BILATERAL W WO CONTRAST"
    ds.SeriesDescription = info.description
    ds.ManufacturerModelName = p.model
    ds.PatientName = info.patient_id
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.PatientWeight = f"{info.weight_kg:.1f}"
    if p.contrast_agent != "absent":
        ds.ContrastBolusAgent = "" if p.contrast_agent == "not stated" else p.contrast_agent
    if info.phase > 0 and info.contrast_volume_ml is not None:
        ds.ContrastBolusVolume = f"{info.contrast_volume_ml:g}"
    ds.BodyPartExamined = "BREAST"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = ["SS", "SP"]
    ds.ScanOptions = p.scan_options.split("\\") if p.scan_options else ""
    ds.MRAcquisitionType = "3D"
    ds.SequenceName = SEQUENCE_NAME[p.manufacturer]
    ds.SliceThickness = f"{p.slice_thickness:g}"
    ds.RepetitionTime = f"{p.tr:.3f}".rstrip("0").rstrip(".")
    ds.EchoTime = f"{p.te:.3f}".rstrip("0").rstrip(".")
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = f"{GAMMA_MHZ_PER_T * p.field_strength:.6f}"
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = f"{p.field_strength:g}"
    spacing = float(np.diff(info.z_positions).__abs__().mean()) if len(info.z_positions) > 1 else p.slice_thickness
    ds.SpacingBetweenSlices = f"{spacing:.4g}"
    ds.EchoTrainLength = "1"
    ds.PercentSampling = f"{100 * p.partial_fourier:g}"
    ds.PercentPhaseFieldOfView = "100"
    ds.PixelBandwidth = f"{1000.0 / max(0.55 * (p.tr - 1.2), 0.5):.1f}"
    ds.SoftwareVersions = SOFTWARE[p.manufacturer]
    ds.ProtocolName = info.description
    if p.manufacturer == "GE":  # Siemens omits ReconstructionDiameter
        ds.ReconstructionDiameter = f"{p.fov:g}"
    ds.ReceiveCoilName = RECEIVE_COIL[p.manufacturer]
    ds.TransmitCoilName = "BODY"
    # phase encoding left-right (InPlanePhaseEncodingDirection ROW): frequency columns \ phase rows
    ds.AcquisitionMatrix = [0, p.acq_freq, p.acq_phase, 0]
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.FlipAngle = f"{p.flip_angle:g}"
    ds.PatientPosition = p.patient_position
    ds.StudyInstanceUID = info.study_uid
    ds.SeriesInstanceUID = info.series_uid
    ds.StudyID = f"{info.patient_index + 1}"
    ds.SeriesNumber = info.series_number
    ds.AcquisitionNumber = 1
    ds.TemporalPositionIdentifier = info.phase + 1
    ds.NumberOfTemporalPositions = info.n_phases
    row_dir = [-1.0, 0.0, 0.0] if info.mirrored else [1.0, 0.0, 0.0]
    col_dir = [0.0, 1.0, 0.0]
    ds.ImageOrientationPatient = [f"{v:g}" for v in row_dir + col_dir]
    ds.FrameOfReferenceUID = info.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.PixelSpacing = [f"{p.pixel_mm:.6g}", f"{p.pixel_mm:.6g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = p.recon.bits_stored
    ds.HighBit = p.recon.bits_stored - 1
    ds.PixelRepresentation = 0
    _set_slice(ds, info, k, pixels)
    return ds


def _set_slice(ds: Dataset, info: SeriesInfo, k: int, pixels: np.ndarray) -> None:
    """The elements that differ between the slices of one series (identity, position, window, pixels)."""
    sop_uid = uid(info.series_uid, "sop", k)
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    z = float(info.z_positions[k])
    ds.ImagePositionPatient = [f"{info.x0:.4f}", f"{info.y0:.4f}", f"{z:.4f}"]
    # +z for FFP storage, -z when mirrored
    normal = np.cross([-1.0, 0.0, 0.0] if info.mirrored else [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    ds.SliceLocation = f"{float(np.dot(normal, [info.x0, info.y0, z])):.4f}"
    hi = float(np.percentile(pixels, 99.5)) if pixels.size else 1.0
    ds.WindowCenter = f"{max(hi / 2, 1):.0f}"
    ds.WindowWidth = f"{max(hi, 2):.0f}"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()


def write_slice(folder: Path, info: SeriesInfo, p: Protocol, k: int, pixels: np.ndarray) -> Path:
    """Write slice ``k`` as ``1-NN.dcm`` (TCIA naming) and return its path."""
    width = max(2, len(str(len(info.z_positions))))
    path = folder / f"1-{k + 1:0{width}d}.dcm"
    # the series header is built once and only the per-slice elements change (slices are written
    # in series order by one process; the cache holds the latest series)
    key = (tuple(np.asarray(v).tobytes() if isinstance(v, np.ndarray) else v
                 for v in dataclasses.astuple(info)), p, pixels.shape)
    cached = _TEMPLATE.get("key") == key
    ds = _TEMPLATE["ds"] if cached else build_dataset(info, p, k, pixels)
    if cached:
        _set_slice(ds, info, k, pixels)
    else:
        _TEMPLATE.update(key=key, ds=ds)
    ds.save_as(path, enforce_file_format=True)
    return path


_TEMPLATE: dict = {}
