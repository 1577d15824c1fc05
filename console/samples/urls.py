from django.urls import path

from console.samples import views

app_name = "samples"
base = "apps/<slug:app>/samples/"
urlpatterns = [
    path(base, views.sample_list, name="list"),
    path(f"{base}quality/", views.quality, name="quality"),
    path(f"{base}policy/", views.policy, name="policy"),
    path(f"{base}monitors/", views.monitors, name="monitors"),
    path(f"{base}monitors/<int:pk>/enabled/", views.monitor_enabled, name="monitor_enabled"),
    path(f"{base}alerts/<int:pk>/", views.alert_decide, name="alert"),
    path(f"{base}<int:pk>/", views.detail, name="detail"),
    path(f"{base}<int:pk>/curate/", views.curate, name="curate"),
]
