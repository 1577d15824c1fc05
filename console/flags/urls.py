from django.urls import path

from console.flags import views

app_name = "flags"
base = "apps/<slug:app>/flags/"
urlpatterns = [
    path(base, views.flag_list, name="list"),
    path(f"{base}new/", views.flag_new, name="new"),
    path(f"{base}<slug:key>/", views.flag_detail, name="detail"),
    path(f"{base}<slug:key>/edit/", views.flag_edit, name="edit"),
    path(f"{base}<slug:key>/evaluate/", views.evaluate_view, name="evaluate"),
    path(f"{base}<slug:key>/<slug:env>/rules/", views.save_rules, name="rules"),
    path(f"{base}<slug:key>/<slug:env>/kill/", views.kill, name="kill"),
    path(f"{base}<slug:key>/<slug:env>/restore/", views.restore, name="restore"),
    path(f"{base}<slug:key>/<slug:env>/diff/", views.diff, name="diff"),
]
