"""The API key admin page: issue a key (shown once), see when each key was last used, revoke."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from console.accounts import keys
from console.accounts.models import ApiKey, ApiKeyScope
from console.accounts.roles import ADMIN
from console.core.permissions import access_application


@login_required
def api_keys(request: HttpRequest, app: str) -> HttpResponse:
    """Admins list and create keys. A new key is rendered in this response only, never again."""
    application = access_application(request, app, ADMIN)
    environments = list(application.environments.order_by("order", "key"))
    issued = None
    errors: dict[str, str] = {}
    values = {"name": "", "environment": "", "scopes": [ApiKeyScope.CONFIG_READ.value]}
    if request.method == "POST":
        values = {
            "name": request.POST.get("name", "").strip(),
            "environment": request.POST.get("environment", ""),
            "scopes": request.POST.getlist("scopes"),
        }
        environment = next((e for e in environments if e.key == values["environment"]), None)
        if environment is None:
            errors["environment"] = "choose the environment this key reads"
        else:
            try:
                issued = keys.create_api_key(
                    actor=request.user,
                    environment=environment,
                    name=values["name"],
                    scopes=values["scopes"],
                )
            except ValidationError as exc:
                errors = {k: " ".join(v) for k, v in exc.message_dict.items()}
    rows = (
        ApiKey.objects.filter(application=application)
        .select_related("environment", "created_by", "revoked_by")
        .order_by("revoked_at", "-created_at")
    )
    response = render(
        request,
        "accounts/keys.html",
        {
            "application": application,
            "environments": environments,
            "keys": rows,
            "issued": issued,
            "errors": errors,
            "values": values if not issued else {"scopes": [ApiKeyScope.CONFIG_READ.value]},
            "scopes": ApiKeyScope.choices,
        },
    )
    # The page may hold a secret: never cache it anywhere.
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def api_key_revoke(request: HttpRequest, app: str, key_id: int) -> HttpResponse:
    application = access_application(request, app, ADMIN)
    key = ApiKey.objects.filter(application=application, pk=key_id).first()
    if key is None:
        raise Http404("No such key")
    keys.revoke_api_key(actor=request.user, api_key=key)
    messages.success(request, f"Revoked {key.name}: it stops working within a second.")
    return redirect("accounts:api_keys", app=app)
