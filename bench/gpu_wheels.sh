#!/usr/bin/env bash
# Wheels for a GPU machine that has torch, torchvision, click, opencv, tqdm, scikit-image, matplotlib and pytest
# but none of this project's other dependencies and no network: run this where PyPI is reachable, carry the folder
# (.whl/, git-ignored) to the GPU machine, and bench/gpu_check.sh and bench/gpu_train.sh install from it:
#
#   bash bench/gpu_wheels.sh [DEST]        # DEST defaults to .whl
#
# The versions are the ones setup.cfg's ranges resolve to in the development venv; the platform tags are those of
# a CPython 3.12 manylinux x86-64 machine (PYTHON_VERSION overrides the version). --no-deps: numpy, pyyaml and
# packaging, which these need, are on such machines already. timm (the ResNet/ViT backbones), kornia, kymatio (the
# scattering baseline) and tensorboard (event files; `train --no-tensorboard` runs without it) come with their own
# dependencies that a torch machine lacks.
set -euo pipefail
dest=${1:-.whl}
py=${PYTHON:-python3}
mkdir -p "$dest"
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$dest" webdataset==1.0.2 braceexpand==0.1.7 faiss-cpu==1.15.1 \
    timm==1.0.31 huggingface_hub==2.4.0 safetensors==0.8.0 hf-xet==1.8.0 \
    kornia==0.9.0 kornia_rs==0.2.0 kymatio==0.3.0 appdirs==1.4.4 configparser==7.3.0 \
    tensorboard==2.21.0 tensorboard-data-server==0.7.2 protobuf==7.36.2 absl-py==2.5.1 grpcio==1.85.3 \
    Markdown==3.11.3 Werkzeug==3.1.9 MarkupSafe==3.0.4
ls -l "$dest"
