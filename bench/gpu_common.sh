# Sourced by bench/gpu_check.sh and bench/gpu_train.sh (from the repository root): the Python to use, the project
# and the carried wheels on its path, and time-boxed steps that log to $out and print one line each.
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

setup_python() {  # the repository first on the path; webdataset and faiss-cpu from .whl/ where they are missing
    local site=${WHEEL_SITE:-/tmp/gpu-site}
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    if ! "$py" -c "import webdataset, faiss" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            .whl/*.whl && export PYTHONPATH="$PYTHONPATH:$site"
    fi
    "$py" -c "import webdataset, faiss" 2>/dev/null \
        || echo "setup: webdataset or faiss-cpu missing; run bench/gpu_wheels.sh where PyPI is reachable, carry .whl/"
}

device_line() {  # one line: what the run runs on
    "$py" - "$1" <<'EOF'
import os, sys, torch
dev = sys.argv[1]
what = (f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, CUDA {torch.version.cuda}"
        if dev != "cpu" and torch.cuda.is_available() else f"no GPU used, {len(os.sched_getaffinity(0))} CPUs")
print(f"device: {what}; torch {torch.__version__}; python {sys.version.split()[0]}")
EOF
}

# step NAME SECONDS CMD...: run CMD under `timeout -k 10 SECONDS`, its output (progress bars dropped) in
# $out/NAME.txt, then one line: NAME ok | FAILED (exit N) | TIMED OUT, with the seconds it took. Returns CMD's
# status; a failed or killed step leaves the next ones to run.
step() {
    local name=$1 secs=$2 t0=$SECONDS status
    shift 2
    echo "== $name: $*" >"$out/$name.txt"
    timeout -k 10 "$secs" "$@" 2>&1 | tr '\r' '\n' | grep -v -E '%\||^\s*$' >>"$out/$name.txt"
    status=${PIPESTATUS[0]}
    local took=$((SECONDS - t0)) verdict="ok"
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        verdict="TIMED OUT (box ${secs} s)"
    elif [ "$status" -ne 0 ]; then
        verdict="FAILED (exit $status; see $out/$name.txt)"
    fi
    echo "step $name: $verdict after ${took} s" | tee -a "$out/$name.txt"
    return "$status"
}
