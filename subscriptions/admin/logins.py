"""django-axes' records of admin logins."""

from axes import admin as axes_admin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest


# django-axes' records of admin logins (README, Security), registered here rather than by axes
# (AXES_ENABLE_ADMIN = False) so that its action, like every other, names its permission.
@admin.register(AccessAttempt)
class AccessAttemptAdmin(axes_admin.AccessAttemptAdmin):
    @admin.action(description="Clean up expired attempts", permissions=["delete"])
    def cleanup_expired_attempts(self, request: HttpRequest, queryset: QuerySet) -> None:
        super().cleanup_expired_attempts(request, queryset)


admin.site.register(AccessLog, axes_admin.AccessLogAdmin)
admin.site.register(AccessFailureLog, axes_admin.AccessFailureLogAdmin)
