"""Who may call the JSON API: token holders with the publish or the manage permission."""

from django.contrib.auth.models import Permission
from django.db.models import Q
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

PUBLISH = "subscriptions.publish_notification"
MANAGE = "subscriptions.manage_hub"


class _HasPerm(BasePermission):
    perms: tuple[str, ...] = ()

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if user is None or not user.is_authenticated or not user.is_active:
            return False
        if user.is_superuser:
            return True
        # One query for "granted to the user or to one of their groups", where
        # user.has_perm() loads every permission of both with two.
        codenames = [perm.split(".", 1)[1] for perm in self.perms]
        return (
            Permission.objects.filter(content_type__app_label="subscriptions", codename__in=codenames)
            .filter(Q(user=user) | Q(group__user=user))
            .exists()
        )


class CanPublish(_HasPerm):
    message = "this token may not publish: it needs the publish permission (manage.py hub_token NAME --publish)"
    perms = (PUBLISH,)


class CanManage(_HasPerm):
    message = "this token may not manage the hub: it needs the manage permission (manage.py hub_token NAME --manage)"
    perms = (MANAGE,)


class CanPublishOrManage(_HasPerm):
    message = "this token needs the publish or the manage permission"
    perms = (PUBLISH, MANAGE)
