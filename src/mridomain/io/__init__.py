"""mridomain.io: read pixels and headers from DICOM files / series, NIfTI and PNG/JPEG/TIFF.

No torch here: the indexer imports this module in worker processes.
"""
from mridomain.io.headers import (
    FUNCTIONAL_GROUP_FIELDS,
    HEADER_KEYWORDS,
    header_fields_from_dataset,
    is_dicom_file,
    iter_candidate_files,
    iter_file_paths,
    open_dicom,
    read_header_fields,
    to_python,
)
from mridomain.io.readers import (
    BITMAP_SUFFIXES,
    NIFTI_SUFFIXES,
    ImageData,
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
