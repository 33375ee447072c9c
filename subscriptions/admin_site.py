"""The hub's admin site: Django's, with the dashboard as its front page (subscriptions/admin/dashboard.py).

`HubAdminConfig`, in INSTALLED_APPS in place of django.contrib.admin, makes it
the default site, so `admin.site` and every `@admin.register` stay as they are.
It lives outside the admin package: that package registers on `admin.site`,
which is built from this class.
"""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.template.response import TemplateResponse


class HubAdminSite(admin.AdminSite):
    index_template = "admin/subscriptions/dashboard.html"
    # Django's list of models beside every page takes 280 px of 1,400 and hides list columns;
    # the breadcrumbs and the front page lead to every list.
    enable_nav_sidebar = False

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        from subscriptions.admin.dashboard import dashboard_context

        context = dict(extra_context or {})
        # The dashboard shows subscriptions and deliveries: only to those who may view them.
        if request.user.has_perms(["subscriptions.view_subscription", "subscriptions.view_delivery"]):
            context.update(dashboard_context(request), dashboard=True)
        return super().index(request, extra_context=context)


class HubAdminConfig(AdminConfig):
    """django.contrib.admin with the hub's site as the default one."""

    default_site = "subscriptions.admin_site.HubAdminSite"
