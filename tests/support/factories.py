"""factory_boy factories for the hub's models: valid rows by default, override what a test is about."""

from datetime import timedelta

import factory
from django.utils import timezone

from subscriptions.models import Delivery, Notification, Subscription, SubscriptionRequest
from subscriptions.topics import subscription_key

# A lease long enough that no test sees it end by accident (seconds).
DEFAULT_LEASE_SECONDS = 86_400


class SubscriptionFactory(factory.django.DjangoModelFactory):
    """A verified, active subscription; `topic_key` follows `topic` unless given."""

    class Meta:
        model = Subscription

    topic = factory.Sequence(lambda n: f"https://publisher.example/feed/{n}")
    topic_key = factory.LazyAttribute(lambda o: subscription_key(o.topic))
    callback = factory.Sequence(lambda n: f"https://subscriber.example/callback/{n}")
    secret = ""
    lease_seconds = DEFAULT_LEASE_SECONDS
    verified_at = factory.LazyFunction(timezone.now)
    expires_at = factory.LazyAttribute(lambda o: o.verified_at + timedelta(seconds=o.lease_seconds))
    state = Subscription.State.ACTIVE

    class Params:
        expired = factory.Trait(
            verified_at=factory.LazyFunction(lambda: timezone.now() - timedelta(seconds=DEFAULT_LEASE_SECONDS + 60))
        )


class SubscriptionRequestFactory(factory.django.DjangoModelFactory):
    """A pending subscribe request."""

    class Meta:
        model = SubscriptionRequest

    mode = SubscriptionRequest.Mode.SUBSCRIBE
    topic = factory.Sequence(lambda n: f"https://publisher.example/feed/{n}")
    topic_key = factory.LazyAttribute(lambda o: subscription_key(o.topic))
    callback = factory.Sequence(lambda n: f"https://subscriber.example/callback/{n}")
    lease_seconds = factory.LazyAttribute(
        lambda o: DEFAULT_LEASE_SECONDS if o.mode == SubscriptionRequest.Mode.SUBSCRIBE else None
    )
    secret = ""
    state = SubscriptionRequest.State.PENDING


class NotificationFactory(factory.django.DjangoModelFactory):
    """A JSON notification that has not been spread yet."""

    class Meta:
        model = Notification

    topic = factory.Sequence(lambda n: f"https://publisher.example/feed/{n}")
    content = b'{"hello":"world"}'
    content_type = "application/json"
    spread_at = None


class DeliveryFactory(factory.django.DjangoModelFactory):
    """A pending delivery of a notification to a subscription on the same topic."""

    class Meta:
        model = Delivery

    notification = factory.SubFactory(NotificationFactory)
    subscription = factory.SubFactory(SubscriptionFactory, topic=factory.SelfAttribute("..notification.topic"))
    callback = factory.LazyAttribute(lambda o: o.subscription.callback)
    status = Delivery.Status.PENDING
