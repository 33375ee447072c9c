from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from subscriptions.api import views

urlpatterns = [
    # First: the busiest path (a publish); Django tries the patterns in order.
    path("notifications/", views.NotificationCreate.as_view(), name="notification-list"),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[AllowAny]), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[AllowAny]), name="swagger-ui"),
    path("notifications/<int:pk>/", views.NotificationDetail.as_view(), name="notification-detail"),
    path("subscriptions/", views.SubscriptionListCreate.as_view(), name="subscription-list"),
    path("subscriptions/<int:pk>/", views.SubscriptionDetail.as_view(), name="subscription-detail"),
    path("subscriptions/<int:pk>/retry-failed", views.SubscriptionRetryFailed.as_view(), name="subscription-retry"),
    path("subscriptions/<int:pk>/pause", views.SubscriptionPause.as_view(), name="subscription-pause"),
    path("subscriptions/<int:pk>/resume", views.SubscriptionResume.as_view(), name="subscription-resume"),
    path("subscriptions/<int:pk>/replay", views.SubscriptionReplay.as_view(), name="subscription-replay"),
    path(
        "subscriptions/<int:pk>/rotate-secret",
        views.SubscriptionRotateSecret.as_view(),
        name="subscription-rotate-secret",
    ),
    path("deliveries/", views.DeliveryList.as_view(), name="delivery-list"),
    path("deliveries/<int:pk>/", views.DeliveryDetail.as_view(), name="delivery-detail"),
    path("deliveries/<int:pk>/retry", views.DeliveryRetry.as_view(), name="delivery-retry"),
    path(
        "subscription-requests/<int:pk>/", views.SubscriptionRequestDetail.as_view(), name="subscription-request-detail"
    ),
]
