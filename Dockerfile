# crm-gateway as a container image: docs/deployment.md#docker-and-podman says how to build, run
# and configure it; `make image-test` builds this file and runs the result (tests/image/).
#
#   docker build -t crm-gateway .
#   docker run -p 8080:8080 -v /etc/crm-gateway:/etc/crm-gateway:ro \
#              -v crm-gateway-data:/var/lib/crm-gateway crm-gateway
#
# The config is read from /etc/crm-gateway/gateway.yaml (mount it there, read-only). Inside
# the container `listen` is 0.0.0.0:8080, and `state.durable.path` is
# /var/lib/crm-gateway/gateway.db: that folder is the one the gateway's user may write.

# Any Debian-like image with Python 3.11 or newer at `python3` and its venv module.
ARG BASE=python:3.11-slim

# -- build: a virtual environment with the gateway and its drivers -----------------------
FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/crm-gateway
# The pip cache outlives the build (where the index lets responses be cached). A build behind a
# TLS-inspecting proxy hands its CA bundle in as the secret `pip_ca`
# (`--secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt`); it never enters a layer.
# Wheels only: nothing here is compiled, so no stage needs a compiler.
# First the dependencies and every extra but `dev` (the drivers: Redis today), read from
# pyproject.toml alone, so that a change to the code alone reuses this layer.
COPY pyproject.toml /src/
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && python3 -c 'import tomllib; p = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; \
        extras = p.get("optional-dependencies", {}); \
        print("\n".join(p["dependencies"] + [r for x in extras if x != "dev" for r in extras[x]]))' \
        > /src/requirements.txt \
 && /opt/crm-gateway/bin/pip install --only-binary=:all: --requirement /src/requirements.txt
# Then the gateway itself; `pip check` proves the two steps agree.
COPY README.md /src/
COPY gateway /src/gateway
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && /opt/crm-gateway/bin/pip install --no-deps /src \
 && /opt/crm-gateway/bin/pip check \
 && /opt/crm-gateway/bin/pip uninstall --quiet --yes pip setuptools \
 && rm -rf /src

# -- the image: the environment above, on the same base, run as an unprivileged user ------
FROM ${BASE}
# A numeric user, so Kubernetes' runAsNonRoot can verify it; the one folder it may write is
# where the SQLite store and the sessions kept across a restart live (gateway.db.sessions).
RUN groupadd --gid 10001 gateway \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/crm-gateway --no-create-home \
        --shell /usr/sbin/nologin gateway \
 && mkdir -p /etc/crm-gateway /var/lib/crm-gateway \
 && chown 10001:10001 /var/lib/crm-gateway \
 && chmod 0750 /var/lib/crm-gateway
COPY --from=build /opt/crm-gateway /opt/crm-gateway
ENV PATH=/opt/crm-gateway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CRM_GATEWAY_HEALTHZ=http://127.0.0.1:8080/_gateway/healthz
VOLUME ["/var/lib/crm-gateway"]
USER 10001:10001
WORKDIR /var/lib/crm-gateway
# 8080: the gateway; 9100: Prometheus metrics when gateway.yaml sets admin.listen to
# 0.0.0.0:9100 (publish it only to the monitoring network).
EXPOSE 8080 9100
# healthz answers while the process serves; readyz (it also asks the CRM) belongs to the load
# balancer, so a CRM outage does not restart the gateway. Another `listen` port or
# `path_prefix` moves healthz: set CRM_GATEWAY_HEALTHZ to match.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['CRM_GATEWAY_HEALTHZ'], timeout=2)"]
# Exec form: the gateway is PID 1 and gets `docker stop`'s SIGTERM itself (drain, then exit).
ENTRYPOINT ["crm-gateway"]
CMD ["run", "-c", "/etc/crm-gateway/gateway.yaml"]

# What changes with every build, the commit and the date, is given at build time:
#   --label org.opencontainers.image.revision=$(git rev-parse HEAD)
#   --label org.opencontainers.image.created=$(git log -1 --format=%cI)
# (Buildah takes a LABEL step from its cache even when an ARG in it changed; --label is
# always applied.) The version is pyproject.toml's: make image-test fails when they differ.
ARG BASE
LABEL org.opencontainers.image.title="crm-gateway" \
      org.opencontainers.image.description="Two-factor authentication, IP allowlists and access rules in front of a legacy CRM, as a streaming reverse proxy" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE}"
