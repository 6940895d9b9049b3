# batchd: slim, non-root, health-checked through the gRPC health service.
#   docker build -t batchd .
#   docker run -p 50051:50051 -p 8080:8080 -e BATCHD_DSN=postgresql://user:pass@db/app batchd
# Without BATCHD_DSN the container starts the embedded PostgreSQL (data in /home/batchd/.batchd).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY scripts/generate ./scripts/generate
COPY client ./client
COPY server ./server
# Two distributions: batchd-client (its build hook generates the protobuf code) and the server,
# which requires it; every dependency is built into /wheels.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ./client .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 batchd
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER batchd
WORKDIR /home/batchd
ENV BATCHD_HOST=0.0.0.0 \
    BATCHD_PORT=50051 \
    PYTHONUNBUFFERED=1
# 8080: the same service over HTTP (Connect, gRPC-Web, curl ingest; BATCHD_HTTP_PORT, 0: off).
EXPOSE 50051 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "batchd.healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["batchd"]
CMD ["serve"]
