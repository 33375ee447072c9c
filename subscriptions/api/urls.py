from django.urls import path

from subscriptions.api import views

urlpatterns = [
    path("notifications/", views.NotificationCreate.as_view(), name="notification-list"),
    path("notifications/<int:pk>/", views.NotificationDetail.as_view(), name="notification-detail"),
    path("subscriptions/", views.SubscriptionListCreate.as_view(), name="subscription-list"),
    path("subscriptions/<int:pk>/", views.SubscriptionDetail.as_view(), name="subscription-detail"),
    path(
        "subscription-requests/<int:pk>/", views.SubscriptionRequestDetail.as_view(), name="subscription-request-detail"
    ),
]
