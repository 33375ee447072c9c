# One image for web, worker and beat (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HUB_VAR_DIR=/app/var

WORKDIR /app

# Dependencies first, so code changes do not reinstall them. psycopg[binary]
# ships wheels: no compiler or libpq needed.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Collect the admin's static files into $HUB_VAR_DIR/static (served by WhiteNoise).
# The key is a build-time placeholder only: settings need one to import, and
# with none set they would write a generated key into the image.
RUN DJANGO_SECRET_KEY=collectstatic-build-only-not-secret python manage.py collectstatic --noinput --verbosity 0 \
    && useradd --system --no-create-home --home-dir /app --shell /usr/sbin/nologin hub \
    && chown -R hub:hub "$HUB_VAR_DIR"

# var/ must stay writable: beat keeps its schedule there.
USER hub

EXPOSE 8000
CMD ["gunicorn", "-c", "gunicorn.conf.py", "websubhub.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "2", "--access-logfile", "-"]
