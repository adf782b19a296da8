"""Bead calibration (Sect. 2.2, 4.1): the options of config ``calibration``, bead reading
and spot fits, camera registration (RANSAC), the PSF fit, QC figures, and load_*/save_* of
affine.yaml and psf.yaml.

Imports physics and the top-level helpers. :mod:`voxloc.calibration.files` needs neither
scikit-image nor the bead fitter, so localization can read the matrices cheaply."""
