from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.urls import reverse

from console.accounts import throttle
from console.accounts.roles import Role

THROTTLED = "throttled"
NO_ACCOUNT = "no_account"


class ThrottledSignInMixin:
    """Refuse the attempt before the password is checked while its username+address pair or its
    address is locked out (console.accounts.throttle); failures are counted by the
    `user_login_failed` signal."""

    def clean(self):
        wait = throttle.retry_after(self.request, self.data.get("username"))
        if wait:
            raise forms.ValidationError(throttle.refusal_message(wait), code=THROTTLED)
        return super().clean()


class SignInForm(ThrottledSignInMixin, AuthenticationForm):
    pass


class AdminSignInForm(ThrottledSignInMixin, AdminAuthenticationForm):
    pass


class GrantForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices)

    def clean_username(self):
        """An existing, active account. Airlock has no sign-up: when there is none, say how an
        operator makes one (the Django admin's Users page, or createsuperuser for another
        operator) instead of leaving the admin at a dead end."""
        username = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise forms.ValidationError(
                "No account named “%(username)s”. Airlock has no sign-up: an operator creates "
                "accounts in the Django admin (%(add_url)s, for a staff account allowed to add "
                "users) or, for another operator, with `python manage.py createsuperuser`; "
                "then add them here.",
                code=NO_ACCOUNT,
                params={"username": username, "add_url": reverse("admin:auth_user_add")},
            )
        if not user.is_active:
            raise forms.ValidationError(
                "The account “%(username)s” is deactivated: an operator can reactivate it in "
                "the Django admin (%(users_url)s, “Active”), then add them here.",
                code="inactive",
                params={"username": username, "users_url": reverse("admin:auth_user_changelist")},
            )
        self.user = user
        return username
