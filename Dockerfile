# One image for every callbridge service: `callbridge ingress|orchestrator|gateway|...`.
#
# Builder: installs requirements/runtime.lock (exact versions, every file hash-checked;
# scripts/lock.sh refreshes it), then the project itself without dependencies. With wheels
# pre-built in deploy/wheels (the air-gapped path: deploy/build-wheels.sh), nothing is
# downloaded; without wheels (a fresh clone: *.whl are not committed) pip fetches the locked
# files from the index. Dependencies are installed before the sources are copied, so a code
# change rebuilds one small layer, not the dependency layer.
# Only `services` and `shared` go in, installed as `callbridge.services` and
# `callbridge.shared` (the package's links to them are made here, not copied, so the
# simulators' link never enters the image): the simulators, the benchmarks and the packages
# only they need (pyproject's `sim`/`test` extras) stay in the source checkout; the build
# fails if `callbridge.simulators` or `bench` is importable in the final image.
# Final: the slim runtime, the virtualenv (without pip: nothing is installed at run time),
# a non-root user; no compilers, no pip cache. Base images: the official ones, or on a
# machine without a registry the stand-ins deploy/offline-images.sh builds (same tags).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements/runtime.lock ./requirements/runtime.lock
COPY deploy/wheels ./deploy/wheels
RUN python -m venv /opt/venv \
 && if ls deploy/wheels/*.whl >/dev/null 2>&1; then \
      /opt/venv/bin/pip install --no-index --find-links deploy/wheels \
        --require-hashes --only-binary=:all: -r requirements/runtime.lock; \
    else \
      /opt/venv/bin/pip install --require-hashes -r requirements/runtime.lock; \
    fi
COPY pyproject.toml README.md ./
COPY services ./services
COPY shared ./shared
COPY callbridge/__init__.py ./callbridge/__init__.py
RUN ln -s ../services callbridge/services && ln -s ../shared callbridge/shared
# --no-deps: every dependency came from the lock above. Offline, the build backend
# (setuptools) comes from deploy/wheels too.
RUN if ls deploy/wheels/*.whl >/dev/null 2>&1; then \
      /opt/venv/bin/pip install --no-deps --no-index --find-links deploy/wheels .; \
    else \
      /opt/venv/bin/pip install --no-deps .; \
    fi \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -m pip uninstall --quiet --yes pip setuptools

FROM ${PYTHON_IMAGE}
RUN useradd --system --no-log-init --uid 10001 --home-dir /app --create-home callbridge
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 LOG_FORMAT=json
WORKDIR /app
USER callbridge
# The image as it will run: the console script works, the services import, and neither the
# simulators nor the benchmarks are there.
RUN for pkg in callbridge.simulators bench simulators services shared; do \
      if python -c "import $pkg" 2>/dev/null; then \
        echo "Dockerfile: '$pkg' is importable in the production image; it must not be" >&2; \
        exit 1; \
      fi; \
    done \
 && callbridge --help >/dev/null \
 && python -c "import callbridge.services.cli, callbridge.services.webhook_ingress, \
callbridge.services.call_orchestrator, callbridge.services.media_gateway, callbridge.shared"
EXPOSE 8080 8090 9101
ENTRYPOINT ["callbridge"]
CMD ["--help"]
