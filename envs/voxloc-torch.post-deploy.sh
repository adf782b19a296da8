#!/usr/bin/env bash
# Snakemake runs this inside the new env, from the workflow's working directory (the
# repository root): make the voxloc library importable by the rule scripts.
set -euo pipefail
python -m pip install --no-deps --no-build-isolation -e .
