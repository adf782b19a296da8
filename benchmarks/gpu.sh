#!/usr/bin/env bash
# The GPU measurements of issue 8 in one go, about 6 min on an H100 / H200 with 16 cores:
#   1. the tests of localization, model and movies, the CUDA ones included (float16 and
#      float32 on the GPU against the CPU);
#   2. bench_localize.py on a 30,000-frame 256 x 256 x 4 movie (15.7 GB, the localization
#      issue's size) with float16 autocast and batch auto (64): frames/s from the TIFF to the
#      closed Parquet, each stage alone, peak RSS;
#   3. the same on a 5,000-frame movie with the page cache dropped first (read from the disk);
#   4. bench_levers.py: accuracy of float32 against float16 on the GPU at 0.01 and 0.05
#      molecules per pixel (100 frames each: accuracy, not speed);
#   5. step 2 with batches of 128, and in float32 (TF32 convolutions).
# Usage: bash benchmarks/gpu.sh [model.pt] [results dir]   (env FRAMES, DISK_FRAMES, WORK)
set -uo pipefail
MODEL=${1:-results/models/quick/model.pt}
OUTDIR=${2:-results/gpu}
FRAMES=${FRAMES:-30000}
DISK_FRAMES=${DISK_FRAMES:-5000}
WORK=${WORK:-/tmp/voxloc-gpu}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUTDIR" "$WORK"
step() { echo "== $(date +%T) $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0), torch.get_num_threads(), 'threads')"
[ "${SKIP_TESTS:-}" ] || step tests
[ "${SKIP_TESTS:-}" ] || timeout 150 python3 -m pytest -q -p no:cacheprovider tests/localization/test_localize.py tests/network/test_model.py tests/localization/test_movies.py 2>&1 | tail -6
bench() {  # bench SECONDS ARGS...
    timeout "$1" python3 benchmarks/bench_localize.py --device cuda --threads 16 --model "$MODEL" \
        --workdir "$WORK" "${@:2}" 2>&1 | grep -v "frame/s\]"
}
step "float16, $FRAMES frames, page cache warm"
bench 200 --frames "$FRAMES" --stages --keep
step "float16, $DISK_FRAMES frames, page cache dropped"
bench 120 --frames "$DISK_FRAMES" --drop-caches
for d in 0.01 0.05; do
    step "accuracy float32 / float16 at $d per px"
    timeout 150 python3 benchmarks/bench_levers.py --device cuda --models "model=$MODEL" --frames 100 --density "$d" \
        --variants model:float32:2:64:16 model:float16:2:64:16 --repeats 1 --workdir "$WORK" \
        --out "$OUTDIR/levers-$d.tsv" 2>&1 | grep -v "frame/s\]" | tail -4
done
step "float16, batch 128, $FRAMES frames, page cache warm"
bench 90 --frames "$FRAMES" --batch 128 --keep
step "float32 (TF32), $FRAMES frames, page cache warm"
bench 120 --frames "$FRAMES" --precision float32
step done
rm -rf "$WORK"
