#!/usr/bin/env bash
# Makes docs/img/dashboard_tensorboard.png and docs/img/dashboard_report.png from a real training run:
#   1. the LoRA recipe (embedded SmolLM2-135M-Instruct, its shortcut-prone arithmetic variant) at
#      reduced size with FaithfulnessCallback and report_to=tensorboard: rounds at steps 0, 4, 8, 12;
#   2. `faithcb report` on that run's faith_history.jsonl (report.html);
#   3. TensorBoard on the run's event files, and both pages captured by headless Chromium;
#   4. Pillow shrinks each capture under 300 KB.
#
#   bash docs/img/make_screenshots.sh              # from the repository root, venv active
#   bash docs/img/make_screenshots.sh WORK_DIR     # the run and captures there (reused if WORK_DIR/run has one)
#
# The images go to docs/img; the run, the captures and the logs to WORK_DIR (default
# outputs/faithcb-dashboard in the repository, git-ignored), kept so a rerun reuses the 13-minute
# training and nothing is lost when a temporary directory is cleaned.
#
# Needs the project's venv (tensorboard is in the [test] extra) and Chromium from Debian
# (`apt-get install -y chromium`). --no-sandbox: Chromium refuses to run as root without it.
# Measured on this project's shared 2-core CPU (load average 3-4 from other work, 2 December 2026):
# 648 s for the whole script (training with its four probe rounds: train_runtime 606 s); with the
# run already in $WORK, about 20 s.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:-${WORK:-$REPO/outputs/faithcb-dashboard}}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)  # absolute (a relative WORK_DIR is the caller's): the report opens as a file:// URL
RUN=$WORK/run
IMG=$REPO/docs/img
PORT=${PORT:-6006}
cd "$REPO"

# 1. A real run (skipped when $RUN already holds one).
if [ ! -f "$RUN/faith_history.jsonl" ]; then
    OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false TENSORBOARD_LOGGING_DIR="$RUN/tb" \
    python recipes/sft_lora.py --config recipes/configs/sft_lora.yaml --output_dir "$RUN" \
        --report_to tensorboard --synthetic_key true --synthetic_corrupt_fraction 0.5 --max_steps 12 \
        --faith_num_rounds 0 --faith_every_n_steps 4 --faith_num_problems 8 --faith_max_chain_tokens 128 \
        --faith_probes early_answering filler --faith_base_reference false --faith_show_progress false
fi

# 2. The HTML report of the run's history.
# From $WORK with relative paths, so the page names run/faith_history.jsonl, not this machine's path.
(cd "$WORK" && faithcb report run --out report --title "faithcb: LoRA recipe, shortcut variant (12 steps)")

# 3. TensorBoard (a JS app: --virtual-time-budget lets its scripts fetch and draw the charts).
(cd "$RUN" && exec tensorboard --logdir tb --host 127.0.0.1 --port "$PORT") >"$WORK/tensorboard.log" 2>&1 &  # relative: the page shows "tb"
TB_PID=$!
trap 'kill "$TB_PID" 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 1; done
shoot() {  # shoot URL OUT.png WIDTH,HEIGHT
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="$3" \
        --virtual-time-budget=30000 --screenshot="$2" "$1" 2>>"$WORK/chromium.log"
}
shoot "http://localhost:$PORT/#custom_scalars" "$WORK/tensorboard.png" 1400,2150  # all three sections
shoot "file://$WORK/report/report.html" "$WORK/report.png" 1400,1000

# 4. Under 300 KB each: at most 1000 px wide, 256-colour palette.
python - "$WORK/tensorboard.png" "$IMG/dashboard_tensorboard.png" "$WORK/report.png" "$IMG/dashboard_report.png" <<'EOF'
import sys
from pathlib import Path

from PIL import Image

pairs = sys.argv[1:]
for src, dst in zip(pairs[::2], pairs[1::2]):
    image = Image.open(src).convert("RGB")
    if image.width > 1000:
        image = image.resize((1000, round(image.height * 1000 / image.width)), Image.LANCZOS)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
    print(f"{dst}: {image.width}x{image.height}, {Path(dst).stat().st_size / 1024:.0f} KB")
EOF
