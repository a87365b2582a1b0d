"""mridomain: the acquisition domain of MRI.

Predict scanner, field strength, sequence timing, matrix, contrast agent and protocol from pixels;
simulate realistic multi-vendor breast MRI as DICOM; study scanner domain shift.
"""
__version__ = "0.1.0"
