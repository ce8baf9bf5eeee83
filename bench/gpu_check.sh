#!/usr/bin/env bash
# The GPU checks in one run, for a lent GPU machine, from a clean checkout (the repository root is the
# working directory): the GPU tests (bfloat16 kernels, the compiled path against eager, CUDA graph
# capture) and the 3B latency bench, eager beside compiled. Writes bench/results/<date>-<gpu>.json
# (and the logs beside it). Needs a Python with CUDA torch and this package's pinned model
# dependencies; it installs nothing unless --wheels names a folder of wheels (no network needed).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/gpu_check.sh [--python PY] [--out DIR] [--wheels DIR] [--preset NAME] [--compile MODE]
                          [--repeats N] [--dry-run] [-h|--help]
  --python PY     the Python with CUDA torch (default: python3)
  --out DIR       where the JSON and logs go (default: bench/results)
  --wheels DIR    install these wheels first (pip --no-index --no-deps, into a temporary folder)
  --preset NAME   the bench's model (default: qwen2.5-vl-3b)
  --compile MODE  the compiled run beside eager (default: reduce-overhead)
  --repeats N     timed chunks per figure (default: 20)
  --dry-run       print what would run, and run nothing
Exit codes: 0 all passed, 1 a test failed, 2 bad arguments, 3 no CUDA GPU.
EOF
}

python=python3 out=bench/results wheels='' preset=qwen2.5-vl-3b compile=reduce-overhead repeats=20 dry_run=0
while (($#)); do
    case "$1" in
        --python | --out | --wheels | --preset | --compile | --repeats)
            if (($# < 2)); then
                echo "gpu_check: $1 needs a value" >&2
                usage >&2
                exit 2
            fi
            declare "${1#--}=$2"
            shift 2
            ;;
        --dry-run) dry_run=1 && shift ;;
        -h | --help) usage && exit 0 ;;
        *)
            echo "gpu_check: unknown argument $1" >&2
            usage >&2
            exit 2
            ;;
    esac
done
case "$compile" in eager | default | reduce-overhead | max-autotune) ;; *)
    echo "gpu_check: --compile must be eager, default, reduce-overhead or max-autotune, got $compile" >&2
    exit 2
    ;;
esac
if ! [[ "$repeats" =~ ^[1-9][0-9]*$ ]]; then
    echo "gpu_check: --repeats must be a positive integer, got $repeats" >&2
    exit 2
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
tests=("$python" -m pytest -q --noconftest -p no:cacheprovider test/test_gpu.py)
bench=("$python" bench/model_latency.py --preset "$preset" --device cuda --compile "$compile" --repeats "$repeats")
if ((dry_run)); then
    [[ -n "$wheels" ]] && echo "install: $python -m pip install --no-index --no-deps --target <tmp> $wheels/*.whl"
    echo "tests: ${tests[*]}"
    echo "bench: ${bench[*]}"
    echo "results: $out/<date>-<gpu>.json"
    exit 0
fi

if [[ -n "$wheels" ]]; then
    site=$(mktemp -d)
    "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$PYTHONPATH:$site"
fi
if ! gpu=$("$python" -c 'import torch; assert torch.cuda.is_available(); print(torch.cuda.get_device_name())' 2>/dev/null); then
    echo "gpu_check: no CUDA GPU visible to $python (torch without CUDA, or no device)" >&2
    exit 3
fi
name="$(date -u +%Y-%m-%d)-$(echo "$gpu" | tr -cs 'A-Za-z0-9' '-' | sed 's/^-*//; s/-*$//' | tr 'A-Z' 'a-z')"
mkdir -p "$out"
echo "gpu_check: $gpu; results in $out/$name.json"

status=0
"${tests[@]}" 2>&1 | tee "$out/$name-tests.log" || status=1
"${bench[@]}" 2>&1 | tee "$out/$name-bench.log" || status=1
"$python" - "$out/$name" "$gpu" "$status" <<'EOF'
import json, platform, sys

import torch
import transformers

stem, gpu, status = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(f'{stem}-bench.log').read().strip().splitlines()
tests = open(f'{stem}-tests.log').read().strip().splitlines()
try:
    bench = json.loads(lines[-1])
except (IndexError, json.JSONDecodeError):
    bench = None
result = {
    'gpu': gpu,
    'torch': torch.__version__,
    'cuda': torch.version.cuda,
    'transformers': transformers.__version__,
    'python': platform.python_version(),
    'tests': tests[-1] if tests else '',
    'passed': status == 0,
    'bench': bench,
}
json.dump(result, open(f'{stem}.json', 'w'), indent=1)
print(json.dumps(result))
EOF
exit "$status"
