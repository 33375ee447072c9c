"""End-to-end tests: real processes (a Celery worker, gunicorn, subprocess servers, a browser) on 127.0.0.1."""
