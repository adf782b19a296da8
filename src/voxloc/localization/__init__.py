"""Localization of movies (Sect. 2.5): streaming TIFF reader, registration resampling onto
camera 1, and the network loop that writes localization tables.

Imports physics, calibration files, network and the top-level helpers."""
