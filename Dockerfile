# One image for every plantfed role: plant worker, HQ worker, coordinator and Flower.
# The command of each container picks the role (see docker-compose.yml).

# Build stage: a compiler is at hand for dependencies without a wheel for this platform.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# README.md* matches nothing until the file exists, and COPY accepts that
# because pyproject.toml is also listed.
COPY pyproject.toml README.md* ./
COPY plantfed ./plantfed
COPY coordinator ./coordinator
COPY worker ./worker
RUN python -m venv /opt/plantfed \
 && /opt/plantfed/bin/pip install .

# Runtime stage: the virtual environment, a system user and its state directory.
FROM python:3.11-slim
ENV PATH=/opt/plantfed/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/plantfed /opt/plantfed
# A named volume mounted on /var/lib/plantfed/checkpoints starts with this
# directory's owner, so the coordinator can write checkpoints without root.
RUN useradd --system --uid 10001 --home-dir /var/lib/plantfed --shell /usr/sbin/nologin plantfed \
 && mkdir -p /var/lib/plantfed/checkpoints /var/lib/plantfed/reports \
 && chown -R plantfed:plantfed /var/lib/plantfed
USER plantfed
WORKDIR /var/lib/plantfed
CMD ["plantfed", "--help"]
