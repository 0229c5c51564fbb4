# One image for every routemesh service; compose.yaml picks the service with the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY services ./services
COPY clients/python ./clients/python
RUN pip install --no-cache-dir . && useradd --system routemesh
USER routemesh
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["routemesh"]
