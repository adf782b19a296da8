"""Rendering of localization tables: 3D histograms and blur, 16-bit ImageJ TIFF, depth-coded PNG.

Imports only the top-level helpers."""
