from django.urls import path

from console.experiments import shadow_views, views

app_name = "experiments"
base = "apps/<slug:app>/experiments/"
shadows = "apps/<slug:app>/shadows/"
urlpatterns = [
    path(base, views.experiment_list, name="list"),
    path(f"{base}<slug:env>/<slug:flag>/", views.report, name="report"),
    path(f"{base}<slug:env>/<slug:flag>/conclude/", views.conclude, name="conclude"),
    path(shadows, shadow_views.shadow_list, name="shadows"),
    path(f"{shadows}<int:pk>/", shadow_views.shadow_detail, name="shadow"),
    path(f"{shadows}<int:pk>/promote/", shadow_views.promote, name="shadow_promote"),
]
