from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from console.accounts import services
from console.accounts.forms import THROTTLED, GrantForm, SignInForm
from console.accounts.models import Membership
from console.accounts.roles import ADMIN, ROLE_PERMISSIONS, Role
from console.core.permissions import access_application


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
    return render(
        request,
        "accounts/members.html",
        {
            "application": application,
            "memberships": memberships,
            "form": form,
            "roles": Role.choices,
            "role_permissions": ROLE_PERMISSIONS,
        },
    )
