#!/usr/bin/env bash
# Every GPU check and benchmark in one call on a lent H100/H200 (at most 9 minutes).
#
# On the development box, from the repo root, once per session:
#     bash benchmarks/device_prepare.sh   # .device-site/ (hydra, omegaconf, pycocoevalcap) and the
#                                         # 1,000 photos in data/flickr8k-test/, within 64 MiB
# then one device call:
#     run(command="bash benchmarks/gpu.sh", carry=[".device-site", "data/flickr8k-test"], timeout_s=590)
# Its tables come back in $OUT: one NAME.md per stage, gpu.log (what this script printed) and
# stages.log (every stage's full output): 8 files, the most that come back.
# Each stage has its own time limit, so one that overruns costs only itself.
#
#     bash benchmarks/gpu.sh --cpu-check      # here: the same stages, tiny, on the CPU (a dry run)
#     bash benchmarks/gpu.sh default_job_compile   # named stages only: here the ones that do not
#                                                  # fit beside the others (6 default jobs, ~6 min)
#     bash benchmarks/gpu.sh training_step_gru     # (the GRU's bare step: 8 files at most come back)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/captioner-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/.device-site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=offline
export TORCHINDUCTOR_CACHE_DIR=/tmp/captioner-inductor  # compiled graphs reused across the stages
PY=${PYTHON:-python3}
exec > >(tee -a "$OUT/gpu.log") 2>&1

cpu_check=false
[[ "${1:-}" == "--cpu-check" ]] && { cpu_check=true; shift; }
named=("$@")  # stages to run; none named: every stage but default_job_compile and training_step_gru
wanted() {
    if [[ ${#named[@]} -eq 0 ]]; then [[ $1 != default_job_compile && $1 != training_step_gru ]]; return; fi
    [[ " ${named[*]} " == *" $1 "* ]]
}

if $cpu_check; then
    device=cpu; PY=${PYTHON:-python}
    step_args=(--device cpu --rnn lstm --precisions fp32 --modes eager --steps 1 --warmup 1
               --lightning-steps 1 --loader-batches 2)  # --check compiles 2 min here: tests cover it
    gru_args=(--device cpu --rnn gru --precisions fp32 --modes eager --steps 1 --warmup 1
                   --lightning-steps 0 --loader-batches 0)
    job_args=(trainer.max_epochs=1 dataset.num_images=100 trainer.accelerator=cpu)
    overhead_args=(--device cpu --steps 2 --warmup 1 --compile false)
    photos=data/flickr8k-test; [[ -d $photos ]] || photos=../shared/data/flickr8k-test
    extraction=("$photos" --device cpu --passes 1 --limit 32 --workers 0 --batch-size 16)
    bf16_job=false  # no bf16 arithmetic on this CPU
else
    device=cuda
    [[ -d .device-site ]] || echo "warning: no .device-site/ (run ../shared/device/stage.sh here first)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    df -h /dev/shm  # loader workers hand decoded images over through shared memory
    step_args=(--device cuda --rnn lstm --precisions fp32,bf16 --modes eager,reduce-overhead
               --steps 40 --warmup 5 --lightning-steps 150 --loader-batches 200 --check)
    gru_args=(--device cuda --rnn gru --precisions fp32,bf16 --modes eager,reduce-overhead
                   --steps 40 --warmup 5 --lightning-steps 0 --loader-batches 0)
    job_args=()
    overhead_args=(--device cuda --steps 100 --warmup 10 --compile auto)
    extraction=(data/flickr8k-test --device cuda --passes 5 --workers 12 --batch-size 128)
    bf16_job=true
fi
"$PY" -c "import torch, pytorch_lightning, hydra; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    || { echo "missing packages: stage .device-site/ (see the top of this file)"; exit 1; }

stage() {  # stage NAME SECONDS COMMAND...: run it under a time limit, keep its table in $OUT/NAME.md
    local name=$1 limit=$2; shift 2
    wanted "$name" || return 0
    echo "=== $name (limit ${limit}s): $*"
    local began=$SECONDS
    local log=/tmp/captioner-gpu-$name.out
    timeout "$limit" "$@" > "$log" 2>&1
    local status=$?
    grep '^|' "$log" > "$OUT/$name.md"
    { echo "=== $name: $*"; cat "$log"; } >> "$OUT/stages.log"  # every stage's full output, one file
    cat "$OUT/$name.md"
    [[ $status -eq 0 ]] || { echo "--- $name exited $status; its last lines:"; tail -20 "$log"; }
    echo "=== $name took $((SECONDS - began)) s"
}

# The limits of the stages a plain call runs sum to 570 s, within the call's 590 (their order: what
# matters most first). Every stage prints its rows as measured: one cut off keeps what it finished.
# 1. The bare LSTM step (fp32/bf16 x eager/CUDA graphs), Trainer.fit with and without the compiled
#    step, compiled = eager on the device, and the loader alone (memory/HDF5/GPU-resident). In that
#    order: fp32's bare rows and Trainer.fit (compile=auto first) before the check and bf16's rows
#    (three cold compiles of ~38 s on an H200). (Add --modes ...,compile or --batch 256 by hand.)
stage training_step 195 "$PY" benchmarks/training_step.py "${step_args[@]}"
# 2. (named only) The same bare step with the GRU.
stage training_step_gru 90 "$PY" benchmarks/training_step.py "${gru_args[@]}"
# 3. The default job (model.compile=auto: eager, its 744 steps do not pay a compile) in fp32, then
#    bf16-mixed: time and scores.
stage default_job 90 "$PY" benchmarks/default_job.py "${job_args[@]}"
$bf16_job && stage default_job_bf16 70 "$PY" benchmarks/default_job.py trainer.precision=bf16-mixed "${job_args[@]}"
# 4. Extraction (EfficientNet-Lite2, 260 px) over the carried Flickr8k photos, 5 passes: JPEGs decoded
#    by 12 workers (PIL) against decoded on the GPU (nvjpeg), and how far their pixels differ.
stage extraction 60 "$PY" benchmarks/gpu_extraction.py "${extraction[@]}"
# 5. A failed run (non-finite loss, loader workers) on the device: exits 1 promptly, nothing left.
stage failure_exit 60 "$PY" benchmarks/failure_exit.py "${job_args[@]}"
# 6. Trainer.fit's compiled step timed plain, then where it spends host time (profiler, per step)
#    and which lines wait for the GPU (sync debug mode, host-read counter: a second, slower fit):
#    item 4 of issue #25, fit at 58% of the bare compiled step.
stage fit_overhead 95 "$PY" benchmarks/fit_overhead.py "${overhead_args[@]}"
# 7. (named only) The default job compiled and eager, 3 seeds each: time and CIDEr-D (auto would
#    run it eager: the rule finds the compile does not pay for 744 steps).
stage default_job_compile 560 "$PY" benchmarks/default_job_compile.py --compile true,false --seeds 0,1,2 \
    "${job_args[@]}"
echo "tables in $OUT"
exec >&- 2>&-; wait  # let tee write gpu.log's last lines before the call ends
