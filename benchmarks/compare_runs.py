"""Side-by-side comparison of finished runs (voxloc.evaluation.compare), e.g. the main job
with psf.model: gaussian and with spline on the demo microscope.

Each RUN_DIR is a run's working directory or its results/ directory. Writes
OUT/comparison.tsv (per movie and run: Jaccard, RMSE lateral / axial, bias per axis, the z
bias over depth, sqrt(mean CRLB), RMSE / bound) and OUT/comparison.png (RMSE lateral and
axial with the bound dashed, bias z and recall against true z, one colour per run), and
prints the table as Markdown.

Run: python benchmarks/compare_runs.py RUN_A RUN_B [--labels gaussian spline] --out DIR
"""

from __future__ import annotations

import argparse
import logging
import sys

from voxloc.errors import InputError
from voxloc.evaluation.compare import compare_runs, markdown_table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR", help="working directory or results/ of a run")
    ap.add_argument("--labels", nargs="+", help="one name per run (default: the directory names)")
    ap.add_argument("--out", required=True, help="directory for comparison.tsv and comparison.png")
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        table = compare_runs(args.runs, args.out, labels=args.labels)
    except InputError as exc:
        print(f"compare_runs: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(markdown_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
