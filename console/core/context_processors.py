from console.core.permissions import user_applications


def navigation(request):
    """The applications switcher in the top bar: evaluated lazily, only if the page shows it."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {
        "nav_applications": lambda: list(user_applications(request.user).only("key", "name")),
        "current_application": getattr(request, "application", None),
        "app_perms": getattr(request, "app_perms", frozenset()),
    }
