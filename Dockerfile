# One image, several processes (see docker-compose.yml and Procfile).
FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-15 zstd \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
ENV PYTHONUNBUFFERED=1 BACKUPS_PG_BIN_DIR=/usr/lib/postgresql/15/bin
