"""mridomain.io: read pixels and headers from DICOM files / series, NIfTI and PNG/JPEG/TIFF.

No torch here: the indexer imports this module in worker processes.
"""
from mridomain.io.fields import (FUNCTIONAL_GROUP_FIELDS, HEADER_KEYWORDS, PIXEL_KEYWORDS, VOLUME_KEYWORDS,
                                 decode_value, is_mosaic, header_fields_from_dataset, to_python)
from mridomain.io.kinds import IMAGE_KINDS, check_keep_kinds, image_kind, kind_problem, volume_labels
from mridomain.io.pixel_checks import pixel_data_problem
from mridomain.io.headers import is_dicom_file, open_dicom, read_header_fields
from mridomain.io.walk import iter_candidate_files, iter_file_paths
from mridomain.io.readers import (
    BITMAP_SUFFIXES,
    NIFTI_SUFFIXES,
    DicomVolume,
    ImageData,
    read_dicom_volume,
    scan_dicom_files,
    scan_dicom_folder,
    dataset_pixels,
    read_bitmap,
    read_dicom,
    read_dicom_series,
    read_image,
    read_nifti,
    slice_sort_key,
)

__all__ = [
    "BITMAP_SUFFIXES",
    "DicomVolume",
    "IMAGE_KINDS",
    "PIXEL_KEYWORDS",
    "VOLUME_KEYWORDS",
    "check_keep_kinds",
    "decode_value",
    "image_kind",
    "is_mosaic",
    "kind_problem",
    "pixel_data_problem",
    "read_dicom_volume",
    "scan_dicom_files",
    "scan_dicom_folder",
    "volume_labels",
    "FUNCTIONAL_GROUP_FIELDS",
    "HEADER_KEYWORDS",
    "NIFTI_SUFFIXES",
    "ImageData",
    "dataset_pixels",
    "header_fields_from_dataset",
    "is_dicom_file",
    "iter_candidate_files",
    "iter_file_paths",
    "open_dicom",
    "read_bitmap",
    "read_dicom",
    "read_dicom_series",
    "read_header_fields",
    "read_image",
    "read_nifti",
    "slice_sort_key",
    "to_python",
]
