# One image for every callbridge service: `callbridge ingress|orchestrator|gateway|...`.
#
# Builder: installs the project into a virtualenv. With wheels pre-built in deploy/wheels
# (the air-gapped path: deploy/build-wheels.sh writes them and requirements.txt), nothing is
# downloaded; without wheels (a fresh clone: *.whl are not committed) pip resolves from the
# index as usual. Dependencies are installed before the sources are
# copied, so a code change rebuilds one small layer, not the dependency layer.
# Final: the slim runtime, the virtualenv (without pip: nothing is installed at run time),
# a non-root user; no compilers, no pip cache. Base images: the official ones, or on a
# machine without a registry the stand-ins deploy/offline-images.sh builds (same tags).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY deploy/wheels ./deploy/wheels
RUN python -m venv /opt/venv \
 && if ls deploy/wheels/*.whl >/dev/null 2>&1; then \
      /opt/venv/bin/pip install --no-index --find-links deploy/wheels \
        -r deploy/wheels/requirements.txt; \
    fi
COPY pyproject.toml README.md ./
COPY services ./services
COPY shared ./shared
COPY simulators ./simulators
# Offline, the build backend (setuptools) comes from deploy/wheels too.
RUN if ls deploy/wheels/*.whl >/dev/null 2>&1; then \
      /opt/venv/bin/pip install --no-index --find-links deploy/wheels .; \
    else \
      /opt/venv/bin/pip install .; \
    fi \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -c "import services.cli" \
 && /opt/venv/bin/python -m pip uninstall --quiet --yes pip setuptools

FROM ${PYTHON_IMAGE}
RUN useradd --system --no-log-init --uid 10001 --home-dir /app --create-home callbridge
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 LOG_FORMAT=json
WORKDIR /app
USER callbridge
EXPOSE 8080 8090 9101
ENTRYPOINT ["callbridge"]
CMD ["--help"]
