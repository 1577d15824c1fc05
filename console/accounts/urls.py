from django.contrib.auth import views as auth_views
from django.urls import path

from console.accounts import key_views, views

app_name = "accounts"
urlpatterns = [
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("apps/<slug:app>/members/", views.members, name="members"),
    path("apps/<slug:app>/keys/", key_views.api_keys, name="api_keys"),
    path(
        "apps/<slug:app>/keys/<int:key_id>/revoke/",
        key_views.api_key_revoke,
        name="api_key_revoke",
    ),
    path(
        "apps/<slug:app>/keys/<int:key_id>/rotate/",
        key_views.api_key_rotate,
        name="api_key_rotate",
    ),
]
