from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "console.accounts"
    label = "accounts"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in, user_login_failed

        from console.accounts import throttle

        user_login_failed.connect(throttle.on_login_failed, dispatch_uid="airlock-login-failed")
        user_logged_in.connect(throttle.on_logged_in, dispatch_uid="airlock-logged-in")
