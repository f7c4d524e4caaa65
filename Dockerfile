# crm-gateway: a slim image that runs as an unprivileged user.
#   docker build -t crm-gateway .
#   docker run -p 8080:8080 -v /etc/crm-gateway:/etc/crm-gateway:ro \
#              -v crm-gateway-data:/var/lib/crm-gateway crm-gateway
# The config is read from /etc/crm-gateway/gateway.yaml (mount it there); its `listen`
# must be 0.0.0.0:8080 (or [::]:8080) inside the container, and state paths should point
# under /var/lib/crm-gateway.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[speed,redis]'

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --home-dir /var/lib/crm-gateway --shell /usr/sbin/nologin gateway \
 && mkdir -p /etc/crm-gateway /var/lib/crm-gateway \
 && chown gateway /var/lib/crm-gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels crm-gateway uvloop redis && rm -rf /wheels
USER gateway
WORKDIR /var/lib/crm-gateway
# 8080: the gateway; 9100: Prometheus metrics when gateway.yaml sets admin.listen to
# 0.0.0.0:9100 (publish it only to the monitoring network).
EXPOSE 8080 9100
# healthz answers while the process serves; readyz (also checks the CRM) belongs to the
# load balancer, so a CRM outage does not restart the gateway.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/_gateway/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["crm-gateway"]
CMD ["run", "-c", "/etc/crm-gateway/gateway.yaml"]
