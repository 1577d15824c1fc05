from django.urls import path

from console.notifications import views

app_name = "notifications"
urlpatterns = [
    path("apps/<slug:app>/webhooks/", views.webhooks, name="webhooks"),
    path(
        "apps/<slug:app>/webhooks/<int:hook_id>/disable/",
        views.webhook_disable,
        name="webhook_disable",
    ),
    path(
        "apps/<slug:app>/webhooks/<int:hook_id>/enable/",
        views.webhook_enable,
        name="webhook_enable",
    ),
    path(
        "apps/<slug:app>/webhooks/<int:hook_id>/test/",
        views.webhook_test,
        name="webhook_test",
    ),
    path(
        "apps/<slug:app>/webhooks/<int:hook_id>/delete/",
        views.webhook_delete,
        name="webhook_delete",
    ),
]
