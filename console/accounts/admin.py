from django.contrib import admin

from console.accounts.forms import AdminSignInForm

# The Django admin's sign-in goes through the same throttle as the console's.
admin.site.login_form = AdminSignInForm
