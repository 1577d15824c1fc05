"""The official OpenFeature Python SDK with its OFREP provider, over real HTTP against a live
server: values, variants and reasons, errors, and a kill switch taking effect at once."""

from __future__ import annotations

import pytest

from console.flags import services
from console.flags.evaluation import bucket, pick_variant

openfeature = pytest.importorskip("openfeature", reason="needs openfeature-sdk (dev extra)")
from openfeature import api  # noqa: E402
from openfeature.contrib.provider.ofrep import OFREPProvider  # noqa: E402
from openfeature.evaluation_context import EvaluationContext  # noqa: E402
from openfeature.exception import ErrorCode  # noqa: E402
from openfeature.flag_evaluation import Reason  # noqa: E402


@pytest.fixture
def of_client(live_server, transactional_db, live_app, issue):
    _, secret = issue("prod")

    def make(key: str = secret):
        api.set_provider(
            OFREPProvider(
                live_server.url, headers_factory=lambda: {"Authorization": f"Bearer {key}"}
            )
        )
        return api.get_client()

    yield make
    api.clear_providers()


def test_sdk_reads_values_variants_and_reasons(of_client, live_app):
    client = of_client()
    switch = client.get_boolean_details("answers-enabled", False, EvaluationContext("user-1"))
    assert (switch.value, switch.variant, switch.reason) == (True, "on", Reason.STATIC)
    assert switch.error_code is None and switch.flag_metadata["rulesVersion"] == 2

    staff = client.get_string_details(
        "support-prompt", "fallback", EvaluationContext("user-1", {"email": "zoe@acme.com"})
    )
    assert (staff.value, staff.variant, staff.reason) == (
        "answer@2",
        "canary",
        Reason.TARGETING_MATCH,
    )

    canary = live_app["canary"]
    for user in ("user-1", "user-2", "user-3", "customer-48213"):
        details = client.get_string_details("support-prompt", "fallback", EvaluationContext(user))
        expected = pick_variant(
            (("stable", 75.0), ("canary", 25.0)), bucket(canary.key, canary.salt, user)
        )
        assert (details.variant, details.reason) == (expected, Reason.SPLIT)

    docs = client.get_integer_details("max-docs", 0, EvaluationContext("user-1"))
    assert (docs.value, docs.variant, docs.reason) == (3, "three", Reason.STATIC)


def test_sdk_reports_ofrep_errors_and_falls_back_to_the_default(of_client):
    client = of_client()
    missing = client.get_boolean_details("no-such-flag", True, EvaluationContext("user-1"))
    assert (missing.value, missing.error_code, missing.reason) == (
        True,
        ErrorCode.FLAG_NOT_FOUND,
        Reason.ERROR,
    )
    no_key = client.get_string_details(
        "support-prompt", "fallback", EvaluationContext(None, {"plan": "pro"})
    )
    assert (no_key.value, no_key.error_code) == ("fallback", ErrorCode.TARGETING_KEY_MISSING)
    wrong_type = client.get_string_details("answers-enabled", "x", EvaluationContext("u"))
    assert wrong_type.error_code == ErrorCode.TYPE_MISMATCH
    stranger = of_client("alk_not-a-key").get_boolean_details("answers-enabled", False)
    assert (stranger.value, stranger.error_code) == (False, ErrorCode.GENERAL)


def test_sdk_sees_a_kill_switch_right_after_it_flips(of_client, live_app, engineer):
    client = of_client()
    ctx = EvaluationContext("user-1")
    assert client.get_boolean_value("answers-enabled", False, ctx) is True
    prod = live_app["switch"].application.environments.get(key="prod")

    services.kill_flag(
        actor=engineer, flag=live_app["switch"], environment=prod, reason="incident 412"
    )
    killed = client.get_boolean_details("answers-enabled", True, ctx)
    assert (killed.value, killed.variant, killed.reason) == (False, "off", Reason.DISABLED)
    assert killed.flag_metadata.get("killed") is True

    services.restore_flag(actor=engineer, flag=live_app["switch"], environment=prod, reason="fixed")
    back = client.get_boolean_details("answers-enabled", False, ctx)
    assert (back.value, back.variant, back.reason) == (True, "on", Reason.STATIC)
