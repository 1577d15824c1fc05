"""The API key admin page: issue a key (shown once), see when each key was last used, rotate
a key (the new one shown once, the old one retired now or after a grace period), revoke."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import F
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from console.accounts import keys
from console.accounts.models import ApiKey, ApiKeyScope
from console.accounts.roles import ADMIN
from console.core import shown_once
from console.core.permissions import access_application

# What the rotate form offers for the old key: POST value → (grace in seconds, label).
ROTATION_GRACE = {
    "now": (0, "stops working now"),
    "1h": (3600, "keeps working for 1 hour"),
    "24h": (24 * 3600, "keeps working for 24 hours"),
}


def _page(
    request: HttpRequest,
    application,
    *,
    issued: keys.IssuedKey | None = None,
    rotated: keys.RotatedKey | None = None,
    errors: dict[str, str] | None = None,
    values: dict | None = None,
) -> HttpResponse:
    rows = (
        ApiKey.objects.filter(application=application)
        .select_related("environment", "created_by", "revoked_by", "replaced_by")
        .order_by(F("revoked_at").asc(nulls_first=True), "-created_at")
    )
    response = render(
        request,
        "accounts/keys.html",
        {
            "application": application,
            "environments": list(application.environments.order_by("order", "key")),
            "keys": rows,
            "issued": issued,
            "rotated": rotated,
            "errors": errors or {},
            "values": values or {"scopes": [ApiKeyScope.CONFIG_READ.value]},
            "scopes": ApiKeyScope.choices,
            "grace_choices": [(value, label) for value, (_, label) in ROTATION_GRACE.items()],
        },
    )
    # The page may hold a secret: never cache it anywhere.
    response["Cache-Control"] = "no-store"
    return response


def _slot(application) -> str:
    return f"api-key:{application.pk}"


def _show_once(
    request: HttpRequest, application, issued: keys.IssuedKey, old: ApiKey | None = None
) -> HttpResponse:
    """Redirect to the keys page, which shows the new key once (Post/Redirect/Get)."""
    shown_once.keep(
        request,
        _slot(application),
        {
            "key": issued.api_key.pk,
            "secret": issued.secret,
            "rotated_from": old.pk if old is not None else None,
        },
    )
    return redirect("accounts:api_keys", app=application.key)


def _taken(request: HttpRequest, application) -> dict:
    """The key created just before this page (if any): `issued` and `rotated` for the page."""
    kept = shown_once.take(request, _slot(application))
    if not kept:
        return {}
    key = ApiKey.objects.filter(application=application, pk=kept["key"]).first()
    if key is None:
        return {}
    issued = keys.IssuedKey(key, kept["secret"])
    old = (
        ApiKey.objects.filter(application=application, pk=kept["rotated_from"]).first()
        if kept.get("rotated_from")
        else None
    )
    if old is None:
        return {"issued": issued}
    return {"issued": issued, "rotated": keys.RotatedKey(old=old, issued=issued)}


@login_required
def api_keys(request: HttpRequest, app: str) -> HttpResponse:
    """Admins list and create keys. A new key is shown on the page the POST redirects to, once:
    reloading that page neither shows it again nor creates another."""
    application = access_application(request, app, ADMIN)
    if request.method != "POST":
        return _page(request, application, **_taken(request, application))
    values = {
        "name": request.POST.get("name", "").strip(),
        "environment": request.POST.get("environment", ""),
        "scopes": request.POST.getlist("scopes"),
    }
    environment = application.environments.filter(key=values["environment"]).first()
    if environment is None:
        return _page(
            request,
            application,
            errors={"environment": "choose the environment this key reads"},
            values=values,
        )
    try:
        issued = keys.create_api_key(
            actor=request.user,
            environment=environment,
            name=values["name"],
            scopes=values["scopes"],
        )
    except ValidationError as exc:
        errors = {k: " ".join(v) for k, v in exc.message_dict.items()}
        return _page(request, application, errors=errors, values=values)
    return _show_once(request, application, issued)


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


@login_required
@require_POST
def api_key_rotate(request: HttpRequest, app: str, key_id: int) -> HttpResponse:
    """Issue the replacement (shown once, on the page this redirects to) and retire the old
    key."""
    application = access_application(request, app, ADMIN)
    key = ApiKey.objects.filter(application=application, pk=key_id).first()
    if key is None:
        raise Http404("No such key")
    choice = ROTATION_GRACE.get(request.POST.get("grace", ""))
    if choice is None:
        messages.error(
            request,
            f"Rotate {key.name}: grace — choose when the old key stops working "
            f"({', '.join(ROTATION_GRACE)}).",
        )
        return redirect("accounts:api_keys", app=app)
    try:
        rotated = keys.rotate_api_key(actor=request.user, api_key=key, grace_seconds=choice[0])
    except ValidationError as exc:
        messages.error(request, f"Cannot rotate: {' '.join(exc.messages)}")
        return redirect("accounts:api_keys", app=app)
    return _show_once(request, application, rotated.issued, old=rotated.old)
