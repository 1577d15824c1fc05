from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.csrf import requires_csrf_token

from console.accounts import services
from console.accounts.forms import NO_ACCOUNT, THROTTLED, GrantForm, SignInForm
from console.accounts.models import Membership
from console.accounts.roles import ADMIN, PERMISSION_ACTIONS, ROLE_PERMISSIONS, Role, roles_with
from console.core.permissions import ApplicationPermissionDenied, access_application


class LoginView(auth_views.LoginView):
    """Sign-in, throttled (console.accounts.throttle): a locked-out attempt is answered 429
    with the time to wait, before the password is checked."""

    template_name = "accounts/login.html"
    redirect_authenticated_user = True
    authentication_form = SignInForm

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.has_error(NON_FIELD_ERRORS, THROTTLED):
            response.status_code = 429
        return response


@login_required
def members(request: HttpRequest, app: str) -> HttpResponse:
    """Admins grant, change and revoke roles in their application."""
    application = access_application(request, app, ADMIN)
    form = GrantForm()
    if request.method == "POST":
        action = request.POST.get("action", "grant")
        try:
            if action == "revoke":
                membership_id = request.POST.get("membership", "")
                membership = (
                    Membership.objects.filter(application=application, pk=membership_id)
                    .select_related("user")
                    .first()
                    if membership_id.isdigit()
                    else None
                )
                if membership is None:
                    raise Http404("No such member")
                services.revoke_membership(actor=request.user, membership=membership)
                messages.success(request, f"Removed {membership.user.username}.")
                return redirect("accounts:members", app=app)
            form = GrantForm(request.POST)
            if form.is_valid():
                services.grant_role(
                    actor=request.user,
                    user=form.user,
                    application=application,
                    role=form.cleaned_data["role"],
                )
                messages.success(
                    request, f"{form.user.username} is now {form.cleaned_data['role']}."
                )
                return redirect("accounts:members", app=app)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("accounts:members", app=app)
    memberships = (
        Membership.objects.filter(application=application)
        .select_related("user")
        .order_by("user__username")
    )
    create_account_url = None
    if (
        form.has_error("username", NO_ACCOUNT)
        and request.user.is_staff
        and request.user.has_perm("auth.add_user")
    ):
        # An operator adding someone without an account: one click to the admin's form for it.
        create_account_url = (
            reverse("admin:auth_user_add")
            + "?"
            + urlencode({"username": form.data.get("username", "").strip()})
        )
    return render(
        request,
        "accounts/members.html",
        {
            "application": application,
            "memberships": memberships,
            "form": form,
            "create_account_url": create_account_url,
            "roles": Role.choices,
            "role_permissions": ROLE_PERMISSIONS,
        },
    )


@requires_csrf_token
def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """The 403 page: for a role check, which application, the member's role, what that role
    cannot do and who can change it; for any other refusal, the reason it was given."""
    context: dict = {"reason": ""}
    if isinstance(exception, ApplicationPermissionDenied):
        application = exception.application
        membership = (
            Membership.objects.filter(application=application, user=request.user).first()
            if request.user.is_authenticated
            else None
        )
        context |= {
            "application": application,
            "role": Role(membership.role).label.lower() if membership else "",
            "action": PERMISSION_ACTIONS.get(exception.perm, "do this"),
            "roles_allowed": [Role(r).label.lower() for r in roles_with(exception.perm)],
        }
    elif exception is not None and exception.args and isinstance(exception.args[0], str):
        context["reason"] = exception.args[0]
    return render(request, "403.html", context, status=403)
