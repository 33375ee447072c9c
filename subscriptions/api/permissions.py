"""Who may call the JSON API: token holders with the publish or the manage permission."""

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from subscriptions.api.authentication import hub_permissions

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
        # The hub's permissions granted to the user or to one of their groups: one
        # query, remembered for a few seconds (subscriptions/api/authentication.py).
        granted = hub_permissions(user)
        return any(perm.split(".", 1)[1] in granted for perm in self.perms)


class CanPublish(_HasPerm):
    message = "this token may not publish: it needs the publish permission (manage.py hub_token NAME --publish)"
    perms = (PUBLISH,)


class CanManage(_HasPerm):
    message = "this token may not manage the hub: it needs the manage permission (manage.py hub_token NAME --manage)"
    perms = (MANAGE,)


class CanPublishOrManage(_HasPerm):
    message = "this token needs the publish or the manage permission"
    perms = (PUBLISH, MANAGE)
