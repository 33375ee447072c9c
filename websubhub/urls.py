from django.contrib import admin
from django.urls import include, path

from subscriptions import health, metrics
from subscriptions.hub import hub_endpoint
from subscriptions.status_page import subscription_status_page

urlpatterns = [
    # First: Django tries the patterns in order, and POST /api/notifications/ is the busiest path (a publish).
    path("api/", include("subscriptions.api.urls")),
    # WebSub (§5.1): the same handler with and without a trailing slash, never a redirect.
    path("hub", hub_endpoint, name="hub"),
    path("hub/", hub_endpoint),
    # The original system's name for the same endpoint.
    path("subscriptions", hub_endpoint),
    path("subscriptions/", hub_endpoint),
    # A subscriber's own view of its subscription (README, Subscriber status page).
    path("hub/status", subscription_status_page, name="hub-status"),
    path("hub/status/", subscription_status_page),
    path("admin/", admin.site.urls),
    # Load balancers and scrapers are configured both ways: answer with and without the slash.
    path("healthz", health.healthz, name="healthz"),
    path("healthz/", health.healthz),
    path("readyz", health.readyz, name="readyz"),
    path("readyz/", health.readyz),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("metrics/", metrics.metrics_view),
]

handler404 = "subscriptions.api.errors.not_found"
