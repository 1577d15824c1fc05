from django.urls import path

from console.evals import views

app_name = "evals"
base = "apps/<slug:app>/evals/"
urlpatterns = [
    path(base, views.run_list, name="runs"),
    path(f"{base}new/", views.run_new, name="new"),
    path(f"{base}estimate/", views.estimate, name="estimate"),
    path(f"{base}compare/", views.compare, name="compare"),
    path(f"{base}<int:pk>/", views.run_detail, name="run"),
    path(f"{base}<int:pk>/cancel/", views.run_cancel, name="cancel"),
    path(f"{base}<int:pk>/rerun/", views.rerun, name="rerun"),
    path(f"{base}<int:pk>/results/<int:result>/review/", views.result_review, name="review"),
    path(
        f"{base}<int:pk>/results/<int:result>/to-golden-set/",
        views.result_to_item,
        name="review_to_item",
    ),
]
