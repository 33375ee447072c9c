# The three single-column foreign-key indexes are dropped: a composite index leads with each
# column (lookups and cascades use it), and every index costs a write per delivery spread and
# per outcome recorded. Only the indexes go: Django's own AlterField would also drop and
# re-validate the foreign-key constraints, a full scan under lock on a large table.

import django.db.models.deletion
from django.db import migrations, models

DROPPED = (
    "subscriptions_delivery_notification_id_189ea4b8",
    "subscriptions_delivery_subscription_id_c8e7410f",
    "subscriptions_deliveryattempt_delivery_id_f5d3566d",
)
RECREATE = (
    'CREATE INDEX "subscriptions_delivery_notification_id_189ea4b8" ON "subscriptions_delivery" ("notification_id")',
    'CREATE INDEX "subscriptions_delivery_subscription_id_c8e7410f" ON "subscriptions_delivery" ("subscription_id")',
    'CREATE INDEX "subscriptions_deliveryattempt_delivery_id_f5d3566d" '
    'ON "subscriptions_deliveryattempt" ("delivery_id")',
)


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0010_drop_ratewindow"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(sql=f'DROP INDEX IF EXISTS "{name}"', reverse_sql=create)
                for name, create in zip(DROPPED, RECREATE, strict=True)
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="delivery",
                    name="notification",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="deliveries",
                        to="subscriptions.notification",
                    ),
                ),
                migrations.AlterField(
                    model_name="delivery",
                    name="subscription",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="deliveries",
                        to="subscriptions.subscription",
                    ),
                ),
                migrations.AlterField(
                    model_name="deliveryattempt",
                    name="delivery",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attempt_log",
                        to="subscriptions.delivery",
                    ),
                ),
            ],
        ),
    ]
