"""A delivery may be replayed: (notification, subscription, replay) is unique instead of (notification, subscription).

The new unique index is built before the old one is dropped, so spread stays
idempotent throughout. Both are plain CREATE/DROP INDEX: on a large delivery
table, run it in a quiet moment (the build blocks writes to the table).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0006_lifecycle_retention_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="delivery",
            name="replay",
            field=models.PositiveIntegerField(
                db_default=0,
                default=0,
                help_text="0: the original delivery; n: the n-th replay of this notification",
            ),
        ),
        migrations.AddConstraint(
            model_name="delivery",
            constraint=models.UniqueConstraint(
                fields=("notification", "subscription", "replay"), name="delivery_unique_per_subscription_replay"
            ),
        ),
        migrations.RemoveConstraint(
            model_name="delivery",
            name="delivery_unique_per_subscription",
        ),
    ]
