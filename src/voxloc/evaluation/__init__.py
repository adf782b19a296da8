"""Evaluation against ground truth: matching and summaries (with the CRLB), voxel-level
metrics (Tables 4-5), density and speed sweeps with their plots, and the batch run summary.

The last stage: may import every earlier one."""
