#!/usr/bin/env bash
# Train the shipped demo models of both SynthCity cities (demo and challenge), seeds 0-4, on one lent
# GPU machine, in one call: how assets/demo and assets/challenge were made (docs/results.md).
#
# Here, once: bash bench/gpu_wheels.sh; mkdir -p .devcarry; cp ~/.cache/torch/hub/checkpoints/
#   mobilenet_v2-b0353104.pth .devcarry/   (and add /.devcarry/ to .git/info/exclude)
# There (carry .whl and .devcarry): bash bench/gpu_demo_seeds.sh
# Back here: python -m sfrs_core.training.gpu_import_seeds (unpacks $OUT into assets/, rebuilding
#   each seed's SARE folder from its SFRS run's generation 0).
#
# Each city is rendered there (the bytes are compared with a render here through the SHA-256 list
# written to $OUT), then every (city, seed) trains as its own process, all at once (the runs train
# from a frozen-trunk feature cache: a few CPU threads and a sliver of the GPU each). Only the SFRS
# exports come back (each seed's SARE baseline is its generation 0), packed in parts under 16 MB.
set -uo pipefail
OUT=${OUT:-/tmp/out}
SEEDS=${SEEDS:-"0 1 2 3 4"}
CITIES=${CITIES:-"demo challenge"}
BUDGET_S=${BUDGET_S:-420}   # training stops here (resumable) so that packing ends inside the call
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
start=$(date +%s)
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
hub=$(python3 -c "import torch; print(torch.hub.get_dir())")/checkpoints
mkdir -p "$hub" && cp -n .devcarry/*.pth "$hub"/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sfrs_core._torchvision, torch, torchvision, faiss, numpy, PIL, cv2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'torchvision', torchvision.__version__, 'faiss', faiss.__version__, 'numpy', numpy.__version__, 'Pillow', PIL.__version__, 'cv2', cv2.__version__)" || exit 1
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 PYTHONUNBUFFERED=1

renders=()  # (a bare `wait` would also wait for the tee above)
for city in $CITIES; do
    data=$(python3 -c "from sfrs_core.demo_cities import CITIES; print(CITIES['$city'][1])")
    python3 -m sfrs_core synth --preset "$city" --out "$data" --workers 8 --quiet --overwrite &
    renders+=($!)
done
for p in "${renders[@]}"; do wait "$p" || { echo "rendering failed"; exit 1; }; done
for city in $CITIES; do
    data=$(python3 -c "from sfrs_core.demo_cities import CITIES; print(CITIES['$city'][1])")
    (cd "$data" && find . -type f | LC_ALL=C sort | xargs sha256sum) > "$OUT/sha256-$city.txt"
done
echo "rendered in $(( $(date +%s) - start )) s"

pids=()
mkdir -p exports/logs
for city in $CITIES; do
    for seed in $SEEDS; do
        timeout --signal=TERM "$BUDGET_S" python3 -m sfrs_core demo --city "$city" --seeds "$seed" --quiet \
            --out "exports/$city/seed$seed" > "exports/logs/train-$city-$seed.log" 2>&1 &
        pids+=($!)
    done
done
for p in "${pids[@]}"; do wait "$p"; done
echo "trained in $(( $(date +%s) - start )) s"
nvidia-smi --query-gpu=memory.used --format=csv,noheader

# The SFRS exports only (gen0 is the SARE baseline), with every seed's timings.
find exports -path '*/sare*' -prune -o -type f -print | LC_ALL=C sort > /tmp/files.txt
tar cf - -T /tmp/files.txt | split -b 15m - "$OUT/exports.tar.part-"
tail -n 4 exports/logs/*.log
ls -la "$OUT"
echo "done in $(( $(date +%s) - start )) s"
