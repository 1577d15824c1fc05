"""Model config fallbacks and breaker policy: validated with the field named, left out of the
content (and its hash) while unset, served in the runtime config; usage events report
`fallback_from` and the costs page shows when and how often fallbacks fired."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from console.accounts import keys
from console.accounts.models import ApiKeyScope
from console.api import auth
from console.core.canonical import content_hash
from console.registry import services as registry
from console.registry.forms import ModelConfigContentForm
from console.registry.validation import clean_model_config_content
from console.usage import services as usage
from tests.factories import MODEL_CONTENT, make_model_config

BREAKER = {"error_rate": 0.5, "window_s": 60, "min_requests": 20}


def test_fallbacks_and_breaker_are_cleaned_and_absent_ones_change_nothing(allow_loopback):
    allow_loopback(8100)
    plain = clean_model_config_content(dict(MODEL_CONTENT))
    assert "fallbacks" not in plain and "breaker" not in plain
    empty = clean_model_config_content({**MODEL_CONTENT, "fallbacks": "", "breaker": None})
    assert content_hash(empty) == content_hash(plain)
    full = clean_model_config_content(
        {**MODEL_CONTENT, "fallbacks": "gpt-small, gpt_tiny", "breaker": dict(BREAKER)}
    )
    assert full["fallbacks"] == ["gpt-small", "gpt_tiny"] and full["breaker"] == BREAKER


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"fallbacks": "ok, not a key!"}, "fallbacks"),
        ({"fallbacks": "a, a"}, "fallbacks"),
        ({"fallbacks": "a, b, c, d, e, f"}, "fallbacks"),
        ({"fallbacks": [1, 2]}, "fallbacks"),
        ({"breaker": {**BREAKER, "error_rate": 0}}, "breaker_error_rate"),
        ({"breaker": {**BREAKER, "window_s": 1.5}}, "breaker_window_s"),
        ({"breaker": {**BREAKER, "min_requests": None}}, "breaker_min_requests"),
        ({"breaker": {**BREAKER, "half_open_s": 5}}, "breaker"),
        ({"breaker": "often"}, "breaker"),
    ],
)
def test_bad_fallbacks_or_breakers_are_refused_naming_the_field(allow_loopback, change, field):
    allow_loopback(8100)
    with pytest.raises(ValidationError) as refused:
        clean_model_config_content({**MODEL_CONTENT, **change})
    assert field in refused.value.message_dict


def test_the_form_reads_and_writes_the_breaker_as_one_object():
    data = {k: str(v) for k, v in MODEL_CONTENT.items()} | {
        "fallbacks": "gpt-small", "breaker_error_rate": "0.5", "breaker_window_s": "60",
        "breaker_min_requests": "20",
    }  # fmt: skip
    form = ModelConfigContentForm(data)
    assert form.is_valid(), form.errors
    content = form.content()
    assert content["breaker"] == BREAKER and content["fallbacks"] == "gpt-small"
    assert "breaker_error_rate" not in content
    blank = ModelConfigContentForm({k: str(v) for k, v in MODEL_CONTENT.items()})
    assert blank.is_valid() and "breaker" not in blank.content()
    initial = ModelConfigContentForm.initial_from({**MODEL_CONTENT, "fallbacks": ["a", "b"],
                                                   "breaker": BREAKER})  # fmt: skip
    assert initial["fallbacks"] == "a, b" and initial["breaker_window_s"] == 60


@pytest.mark.django_db
def test_fallbacks_are_served_and_fired_fallbacks_shown(client, application, engineer):
    auth.forget_all()
    head = make_model_config(application, engineer, key="main")
    make_model_config(application, engineer, key="small")
    version = registry.save_head_version(
        actor=engineer, head=head, base_number=1,
        content={**MODEL_CONTENT, "fallbacks": ["small"], "breaker": BREAKER},
    ).version  # fmt: skip
    dev = application.environments.get(key="dev")
    registry.bind_version(actor=engineer, environment=dev, version=version)
    secret = keys.create_api_key(
        actor=None, environment=dev, name="dev-app",
        scopes=[ApiKeyScope.CONFIG_READ, ApiKeyScope.USAGE_WRITE],
    ).secret  # fmt: skip
    served = client.get("/api/v1/config", HTTP_AUTHORIZATION=f"Bearer {secret}").json()
    assert served["model_configs"]["main"]["fallbacks"] == ["small"]
    assert served["model_configs"]["main"]["breaker"] == BREAKER

    at = (timezone.now() - timedelta(minutes=5)).isoformat()
    events = [
        {"event_id": f"e-{n}", "time": at, "model": "small@1", "input_tokens": 10,
         "fallback_from": "main@2" if n < 3 else ""}
        for n in range(5)
    ]  # fmt: skip
    usage.ingest(application=application, environment=dev, events=events)
    usage.rollup(settle=timedelta(0))
    client.force_login(engineer)
    page = client.get(reverse("usage:dashboard", args=[application.key]))
    (pair,) = page.context["fallbacks"]["pairs"]
    assert (pair["fallback_from"], pair["model_config"], pair["n"]) == ("main@2", "small@1", 3)
    assert "Fallbacks fired" in page.content.decode()
    too_long = usage.BatchRejected
    with pytest.raises(too_long) as refused:
        usage.ingest(
            application=application, environment=dev,
            events=[{"event_id": "x", "time": at, "model": "small@1", "fallback_from": "m" * 201}],
        )  # fmt: skip
    assert refused.value.errors[0]["field"] == "fallback_from"
