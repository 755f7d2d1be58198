#!/usr/bin/env bash
# Wheels for a GPU machine that has torch, torchvision, click, opencv, tqdm, scikit-image, matplotlib and pytest
# but none of this project's other dependencies and no network: run this where PyPI is reachable, carry the folder
# (.whl/, git-ignored) to the GPU machine, and bench/gpu_check.sh and bench/gpu_train.sh install from it:
#
#   bash bench/gpu_wheels.sh [DEST]        # DEST defaults to .whl (19 MB)
#
# The versions are the ones setup.cfg's ranges resolve to in the development venv; the platform tags are those of
# a CPython 3.12 manylinux x86-64 machine (PYTHON_VERSION overrides the version). --no-deps: numpy, pyyaml and
# packaging, which these need, are on such machines already.
set -euo pipefail
dest=${1:-.whl}
py=${PYTHON:-python3}
mkdir -p "$dest"
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$dest" webdataset==1.0.2 braceexpand==0.1.7 faiss-cpu==1.15.1
ls -l "$dest"
