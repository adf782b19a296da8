"""Post-processing of a movie's localization table (issue 17): sample-drift estimation and
correction, blink linking, filtering and resolution QC.

Imports only the top-level helpers (numpy, scipy, pandas: no torch)."""
