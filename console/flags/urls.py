app_name = "flags"
urlpatterns: list = []
