from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm

from console.accounts import throttle
from console.accounts.roles import Role

THROTTLED = "throttled"


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
        username = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise forms.ValidationError(f"No active user named {username!r}.")
        self.user = user
        return username
