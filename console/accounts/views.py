from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from console.accounts import services
from console.accounts.forms import GrantForm
from console.accounts.models import Membership
from console.accounts.roles import ADMIN, ROLE_PERMISSIONS, Role
from console.core.permissions import access_application


class LoginView(auth_views.LoginView):
    """Sign-in with throttling: after LOGIN_FAILURE_LIMIT failures for one username from one
    address within the window, further attempts are refused (429) until it passes."""

    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def _key(self) -> str:
        username = (self.request.POST.get("username") or "").strip().lower()[:150]
        return f"login-failures:{username}:{self.request.META.get('REMOTE_ADDR', '')}"

    def post(self, request, *args, **kwargs):
        if cache.get(self._key(), 0) >= settings.LOGIN_FAILURE_LIMIT:
            form = self.get_form()
            minutes = settings.LOGIN_FAILURE_WINDOW_S // 60
            form.add_error(None, f"Too many failed sign-ins. Try again in {minutes} minutes.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        key = self._key()
        if not cache.add(key, 1, settings.LOGIN_FAILURE_WINDOW_S):
            try:
                cache.incr(key)
            except ValueError:
                cache.set(key, 1, settings.LOGIN_FAILURE_WINDOW_S)
        return super().form_invalid(form)

    def form_valid(self, form):
        cache.delete(self._key())
        return super().form_valid(form)


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
