#!/usr/bin/env bash
# The GPU checks of the operator and the training step, in one go (about 5 minutes on an H200).
#
# Run from the repository root on a CUDA machine with this package and its dependencies
# importable: bash benchmarks/gpu_checks.sh [OUTPUT_FOLDER]
# Each step's output goes to OUTPUT_FOLDER (default: gpu-checks/), and the run goes on
# after a failing step, so that one bad step does not cost the others' numbers.
set -u
out=${1:-gpu-checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0
step() {  # step NAME COMMAND...: run, keep its output, remember a failure
    local name=$1
    shift
    echo "== $name: $*"
    if ! "$@" >"$out/$name.txt" 2>&1; then
        echo "   FAILED (see $out/$name.txt)"
        status=1
    fi
    tail -n 25 "$out/$name.txt"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$out/gpu.txt" 2>&1
python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
    >>"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
# the compiled Triton kernels and the other engines against the brute-force oracle
step tests python -m pytest -q -p no:cacheprovider tests/test_scnp.py tests/test_triton_pooling.py --device cuda
# the operator: Triton and max_pool engines against the published formula (time, saved memory)
step bench_scnp python benchmarks/bench_scnp.py --device cuda
# the loss alone: upstream's per-image forward against the batched one
step bench_batched_loss python benchmarks/bench_batched_loss.py --device cuda
# a whole training step at upstream's size: tiles/s, phases, GPU busy, launches and syncs per step
step bench_train python benchmarks/bench_train.py --device cuda --workers 4 --steps 10 --rounds 3
step bench_train_bf16 python benchmarks/bench_train.py --device cuda --workers 4 --steps 10 --rounds 3 --precision bf16
exit $status
