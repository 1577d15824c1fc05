"""Panels that apps above the registry add to an application's dashboard.

The registry sits below flags and releases and never imports them. An app that has something
for the dashboard (kill switches, rollouts, promotions awaiting the viewer) registers a provider
in its AppConfig.ready(); the dashboard view merges what every provider returns into its
context. Each provider must keep a fixed number of queries, whatever the data."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest

from console.registry.models import Application

Provider = Callable[[HttpRequest, Application], dict]
_providers: list[Provider] = []


def register(provider: Provider) -> None:
    if provider not in _providers:
        _providers.append(provider)


def panels(request: HttpRequest, application: Application) -> dict:
    context: dict = {}
    for provider in _providers:
        context.update(provider(request, application))
    return context
