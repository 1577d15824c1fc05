from django.urls import path

from console.usage import views

app_name = "usage"
base = "apps/<slug:app>/usage/"
urlpatterns = [
    path(base, views.dashboard, name="dashboard"),
    path(f"{base}export.csv", views.export, name="export"),
    path(f"{base}budgets/", views.budgets, name="budgets"),
    path(f"{base}prices/", views.prices, name="prices"),
]
