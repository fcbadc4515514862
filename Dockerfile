# ddpm-repro on GPUs: `ddpm-repro`, `dvc repro` and `torchrun` over a mounted working tree.
# Build and run: docs/docker.md. Checked by tests/unit/test_dockerfile.py (hadolint and facts).
#
# The base image carries the CUDA build of torch that pyproject.toml pins (torch==2.14.1,
# torchvision==0.29.1): 2.14.1+cu130 with cuDNN 9, the same CUDA 13.0 wheels that pip installs
# for the pin on Linux. CUDA 13 needs an NVIDIA driver >= 580 and a Turing or newer GPU; for
# older machines, build from the 2.14.1-cuda12.6-cudnn9-runtime tag of the same image (same
# torch, so the constraint below still holds). Pin the digest (`FROM ...@sha256:...`) for a
# byte-identical base once you have pulled it.
FROM pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime

LABEL org.opencontainers.image.title="ddpm-repro" \
      org.opencontainers.image.description="DDPM / Improved DDPM reproduction as a DVC pipeline tracked in MLflow" \
      org.opencontainers.image.licenses="MIT"

# No telemetry from DVC or MLflow; logs unbuffered; pip keeps no cache. The base image's
# Python is Ubuntu's (PEP 668): this image is the environment, so pip installs into it.
ENV MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    DVC_NO_ANALYTICS=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_BREAK_SYSTEM_PACKAGES=1

# git: DVC and the MLflow tags read the mounted repository. The working tree is mounted from
# the host and owned by a host uid, which git would refuse as "dubious ownership".
# No make, on purpose: the Makefile's targets build a .venv and install torch into it, which
# fails under PIP_CONSTRAINT below; here `ddpm-repro repro` is `make run` (docs/docker.md).
# DL3008 (apt versions unpinned): the base image's Ubuntu release fixes them; an exact Ubuntu
# version leaves the archive at its next security update and would break every later build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && git config --system --add safe.directory '*'

WORKDIR /opt/ddpm-repro

# Keep the base image's torch: every pip install in this image (and in containers made from
# it) is constrained to the torch and torchvision already there, so pip either accepts them
# (pyproject's `torch==2.14.1` matches 2.14.1+cu130) or fails: it never installs a second torch.
RUN python -c "import importlib.metadata as m; print(*(f'{p}=={m.version(p)}' for p in ('torch', 'torchvision')), sep='\n')" \
    > /opt/ddpm-repro/torch-constraints.txt
ENV PIP_CONSTRAINT=/opt/ddpm-repro/torch-constraints.txt

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when it changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
    > requirements.txt \
    && python -m pip install --no-cache-dir --constraint torch-constraints.txt --requirement requirements.txt \
    && dvc config --system core.analytics false \
    && dvc config --system core.check_update false

# The project itself, not editable; its dependencies are all in place.
COPY README.md LICENSE* ./
COPY src ./src
RUN python -m pip install --no-cache-dir --no-deps --constraint torch-constraints.txt . \
    && rm -rf build src \
    && ddpm-repro --version && dvc --version && torchrun --help > /dev/null

# A non-root user whose uid (1000, the first user of most Linux hosts) owns the files the
# pipeline writes into the mounted tree. Another host uid: `docker run --user "$(id -u):$(id -g)"`
# (docs/docker.md). Ubuntu 24.04 images already have a user 1000, `ubuntu`: it is replaced.
ARG USER_UID=1000
RUN if id -u ubuntu > /dev/null 2>&1; then userdel --remove ubuntu 2> /dev/null || true; fi \
    && groupadd --gid "${USER_UID}" ddpm \
    && useradd --uid "${USER_UID}" --gid "${USER_UID}" --create-home --shell /bin/bash ddpm \
    && mkdir -p /workspace \
    && chown ddpm:ddpm /workspace
USER ${USER_UID}:${USER_UID}

# Mount the repository's working tree here (-v "$PWD":/workspace).
WORKDIR /workspace
CMD ["ddpm-repro", "--help"]
