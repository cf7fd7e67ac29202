# One image, several processes (see docker-compose.yml and Procfile): runtime dependencies only, non-root.
FROM python:3.11-slim-bookworm
ARG PG_MAJOR=18
# pg_dump/psql of the same major as the server (PostgreSQL's own apt repository: Debian 12 ships only 15).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl gnupg zstd \
    && install -d /usr/share/postgresql-common/pgdg \
    && curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
         https://www.postgresql.org/media/keys/ACCC4CF8.asc \
    && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
         > /etc/apt/sources.list.d/pgdg.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-${PG_MAJOR} \
    && apt-get purge -y curl gnupg && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 app && install -d -o app -g app /data/backups /app
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY --chown=app:app . .
ENV PYTHONUNBUFFERED=1 BACKUPS_PG_BIN_DIR=/usr/lib/postgresql/${PG_MAJOR}/bin BACKUPS_LOCAL_ROOT=/data/backups
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v0
USER app
EXPOSE 8000
CMD ["gunicorn", "project.wsgi:application", "-c", "project/gunicorn.conf.py"]
