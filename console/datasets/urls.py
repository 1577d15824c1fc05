from django.urls import path

from console.datasets import views

app_name = "datasets"
base = "apps/<slug:app>/datasets/"
urlpatterns = [
    path(base, views.dataset_list, name="list"),
    path(f"{base}new/", views.dataset_new, name="new"),
    path(f"{base}<slug:key>/", views.editor, name="editor"),
    path(f"{base}<slug:key>/hints/", views.hints, name="hints"),
    path(f"{base}<slug:key>/variable-gaps/", views.variable_gaps, name="variable_gaps"),
    path(f"{base}<slug:key>/items/add/", views.item_add, name="item_add"),
    path(f"{base}<slug:key>/items/bulk/", views.bulk, name="bulk"),
    path(
        f"{base}<slug:key>/items/<str:item_id>/duplicate/",
        views.item_duplicate,
        name="item_duplicate",
    ),
    path(f"{base}<slug:key>/items/<str:item_id>/<str:field>/", views.cell, name="cell"),
    path(f"{base}<slug:key>/import/", views.import_start, name="import"),
    path(f"{base}<slug:key>/import/<int:job>/", views.import_job, name="import_job"),
    path(f"{base}<slug:key>/export/", views.export, name="export"),
    path(f"{base}<slug:key>/publish/", views.publish, name="publish"),
    path(f"{base}<slug:key>/versions/", views.versions, name="versions"),
    path(f"{base}<slug:key>/versions/<int:number>/", views.version_detail, name="version"),
    path(f"{base}<slug:key>/diff/", views.diff, name="diff"),
]
