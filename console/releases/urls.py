from django.urls import path

from console.releases import views

app_name = "releases"
base = "apps/<slug:app>/releases/"
urlpatterns = [
    path(base, views.inbox, name="inbox"),
    path(f"{base}new/", views.new, name="new"),
    path(f"{base}<int:pk>/", views.detail, name="detail"),
    path(f"{base}<int:pk>/act/", views.act, name="act"),
    path(f"{base}<int:pk>/checklist/", views.tick, name="tick"),
    path(f"{base}history/<slug:env>/", views.history, name="history"),
    path(f"{base}policy/<slug:env>/", views.policy, name="policy"),
]
