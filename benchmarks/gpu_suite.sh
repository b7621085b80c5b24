#!/usr/bin/env bash
# The GPU figures benchmarks/RESULTS.md asks for, in one go on one GPU machine (about 5 of its
# 8 minutes on one GPU with 16 cores), run from the repository root:
#
#   bash benchmarks/gpu_suite.sh            # prints every figure; $OUT/gpu_suite.log keeps them
#
# 1. ~4,000 images: the real NIH PNGs of tests/data copied under new ids (real decoding cost).
# 2. embed: decoding alone (every core), the model alone and the whole pipeline, images/s, for a
#    random-weights ViT-B-32 at fp16 and at bf16 (benchmarks/embed_throughput.py), and what that
#    makes of NIH's 112,120 images (target: pipeline >= 0.9 x the slower stage, <= 90 s).
# 3. adapt: one epoch of adapt's real step on 2,000 images through the pixel cache against
#    decoding PNGs every epoch (benchmarks/adapt_throughput.py; target: bound by the GPU).
# 4. --resume on CUDA: embed's bytes and adapt's tensors against uninterrupted runs
#    (benchmarks/resume_check.py).
# 5. with two or more GPUs: a two-rank torchrun embed (each rank its own GPU and shard), its
#    seconds beside the one-process embed's, and its cache against that one's, byte for byte;
#    and one epoch of adapt on 2,000 images, one process against two DDP ranks (same global
#    batch), seconds and train loss side by side (dropout's draws differ, so the losses only
#    come close).
#
# The machine needs Python with torch (CUDA), torchvision, h5py, numpy, pillow, scikit-learn,
# typer, rich and safetensors; packages it lacks travel as wheels in .whl/ (open_clip_torch,
# ftfy, wcwidth on the project's H200 machines), made here with e.g.
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
exec > >(tee "$OUT/gpu_suite.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
python3 - <<'EOF'
import torch
assert torch.cuda.is_available(), "no GPU: this suite is for a GPU machine"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"{torch.cuda.get_device_name()} (compute capability {'.'.join(map(str, torch.cuda.get_device_capability()))})")
EOF
nproc
DATA=$(mktemp -d)/nih
python3 - "$DATA" <<'EOF'
import sys, time
from pathlib import Path
from cxrprobe.data.synthetic import write_nih_folder
start = time.perf_counter()
write_nih_folder(Path(sys.argv[1]), 4000, seed=0, png_pool=sorted(Path("tests/data/nih/images").glob("*.png")))
print(f"4000 real NIH PNGs copied under new ids in {time.perf_counter() - start:.1f} s")
EOF

for precision in fp16 bf16; do
  echo "== embed, ViT-B-32, $precision"
  python3 benchmarks/embed_throughput.py --data-dir "$DATA" --model ViT-B-32 --device cuda --precision "$precision" \
      --batch-size 256 --rounds 2 | tee "$OUT/embed-$precision.txt"
  python3 - "$OUT/embed-$precision.txt" <<'EOF'
import sys
last = open(sys.argv[1]).read().strip().splitlines()[-1]
pipeline = float(dict(f.split("=") for f in last.split())["pipeline_ips"])
print(f"  NIH's 112,120 images at this pipeline rate: {112120 / pipeline:.0f} s (target <= 90 s)")
EOF
done

echo "== adapt, ViT-B-32, top 3 blocks, 2,000 images, precision auto"
python3 benchmarks/adapt_throughput.py --model ViT-B-32 --images 2000 --device cuda --batch-size 32

echo "== --resume on CUDA"
python3 benchmarks/resume_check.py --data-dir "$DATA" --model ViT-B-32 --device cuda

if [ "$(python3 -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  echo "== embed, ViT-B-32, fp16: one process against torchrun --nproc-per-node 2"
  export SOURCE_DATE_EPOCH=1700000000
  EMBED=(-m cxrprobe embed --data-dir "$DATA" --model ViT-B-32 --pretrained none --precision fp16 --batch-size 256 -q)
  timed() { python3 -c 'import subprocess, sys, time; t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True, stdout=sys.stderr); print(f"{time.perf_counter() - t:.1f}")' "$@"; }
  one=$(timed python3 "${EMBED[@]}" --device cuda:0 --out "$OUT/one.h5")
  two=$(timed python3 -m torch.distributed.run --standalone --nproc-per-node 2 "${EMBED[@]}" --device cuda --out "$OUT/two.h5")
  echo "  one process ${one} s, two ranks ${two} s (model loading included)"
  if cmp -s "$OUT/one.h5" "$OUT/two.h5"; then echo "  the two-rank cache is byte-identical"; else echo "  the two-rank cache DIFFERS"; fi
  echo "== adapt, ViT-B-32, top 3 blocks, 1 epoch, --limit 2000: one process against torchrun --nproc-per-node 2"
  ADAPT=(-m cxrprobe adapt --data-dir "$DATA" --model ViT-B-32 --pretrained none --epochs 1 --limit 2000 --batch-size 64 -q)
  one=$(timed python3 "${ADAPT[@]}" --device cuda:0 --out "$OUT/adapt-one")
  two=$(timed python3 -m torch.distributed.run --standalone --nproc-per-node 2 "${ADAPT[@]}" --device cuda --out "$OUT/adapt-two")
  echo "  one process ${one} s, two ranks ${two} s (pixel decoding and model loading included)"
  for run in adapt-one adapt-two; do echo "  $run: $(sed -n 2p "$OUT/$run/metrics.csv" | cut -d, -f1-3) (epoch, train loss, val AUC)"; done
else
  echo "== one GPU: the two-rank torchrun embed and adapt are skipped"
fi
