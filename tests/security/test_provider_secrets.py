"""Provider keys: a model config may name only a variable the operator lists in
AIRLOCK_PROVIDER_KEYS, and its key goes only to the hosts it is bound to. Airlock's own settings
can never be named. Refused at save, shown on the page of a config that breaks the rule, refused
at launch, and never sent by a run already queued. Production settings; loopback only."""

from __future__ import annotations

import pytest
from django.urls import reverse

from console.accounts.roles import Role
from console.config import ConfigError, load
from console.core.versioning import save_version
from console.evals import services as evals
from console.evals.models import EvalResult, EvalRun
from console.registry.kinds import MODEL_CONFIG
from console.registry.models import ModelConfigVersion
from tests.evals.helpers import publish_items
from tests.factories import MODEL_CONTENT, make_model_config, make_prompt

pytestmark = pytest.mark.django_db

SECRET = "s3cret-" + "x" * 40


@pytest.fixture
def engineer_client(client, member):
    engineer = member(Role.ENGINEER, "eng")
    client.force_login(engineer)
    client.engineer = engineer
    return client


def model_form(**overrides) -> dict:
    data = {
        "key": "leaky", "name": "Leaky", "description": "", "provider": "openai",
        "base_url": "https://collector.attacker.net/v1", "model": "gpt-4o-mini",
        "api_key_env": "SECRET_KEY", "temperature": "0", "max_tokens": "100", "timeout_s": "10",
        "max_retries": "0", "max_concurrency": "1", "price_input_per_1m": "0",
        "price_cached_input_per_1m": "0", "price_output_per_1m": "0",
        "base_number": "0", "message": "new",
    }  # fmt: skip
    data.update(overrides)
    return data


def new_model_url(application) -> str:
    return reverse("registry:head_new", kwargs={"app": application.key, "kind": "models"})


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("SECRET_KEY", "SECRET_KEY is one of Airlock's own settings"),
        ("DATABASE_URL", "DATABASE_URL is one of Airlock's own settings"),
        ("AIRLOCK_SIMULATOR_KEY", "AIRLOCK_SIMULATOR_KEY is one of Airlock's own settings"),
        ("OPENAI_API_KEY", "OPENAI_API_KEY may only be sent to api.openai.com"),
        ("HOME", "HOME is not a provider key this deployment allows"),
    ],
)
def test_a_model_config_cannot_send_a_key_it_is_not_allowed_to_send_there(
    engineer_client, application, production, network, variable, message
):
    production.AIRLOCK_EGRESS_ALLOW = ["*"]
    # Even an operator listing Airlock's own settings does not make them sendable.
    production.AIRLOCK_PROVIDER_KEYS = {
        "OPENAI_API_KEY": ("api.openai.com",),
        "SECRET_KEY": ("*",),
        "DATABASE_URL": ("*",),
    }
    response = engineer_client.post(new_model_url(application), model_form(api_key_env=variable))
    assert response.status_code == 200
    errors = response.context["content_form"].errors["api_key_env"]
    assert len(errors) == 1 and errors[0].startswith(message)
    assert not application.model_configs.exists()
    assert network.refused == []


def test_only_a_listed_key_bound_to_the_base_url_host_is_accepted(
    engineer_client, application, production, network, dns
):
    production.AIRLOCK_EGRESS_ALLOW = ["api.openai.com", "collector.attacker.net"]
    production.AIRLOCK_PROVIDER_KEYS = {"OPENAI_API_KEY": ("api.openai.com",)}
    dns["api.openai.com"] = ["162.159.140.245"]
    dns["collector.attacker.net"] = ["93.184.216.34"]
    refused = engineer_client.post(
        new_model_url(application),
        model_form(base_url="https://collector.attacker.net/v1", api_key_env="OPENAI_API_KEY"),
    )
    assert refused.context["content_form"].errors["api_key_env"] == [
        "OPENAI_API_KEY may only be sent to api.openai.com; base_url points elsewhere."
    ]
    response = engineer_client.post(
        new_model_url(application),
        model_form(base_url="https://api.openai.com/v1", api_key_env="OPENAI_API_KEY"),
    )
    assert response.status_code == 302
    assert application.model_configs.get(key="leaky").latest_number == 1
    assert network.refused == []


def test_the_operator_cannot_list_airlocks_own_settings():
    base = {"DEBUG": "1"}
    for variable in ("SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "METRICS_TOKEN",
                     "CACHE_URL", "EMAIL_HOST_PASSWORD", "AIRLOCK_ANYTHING"):  # fmt: skip
        with pytest.raises(ConfigError, match=f"{variable} is one of Airlock's own settings"):
            load({**base, "AIRLOCK_PROVIDER_KEYS": f"{variable}@api.openai.com"})
    config = load({**base, "AIRLOCK_PROVIDER_KEYS": "OPENAI_API_KEY@api.openai.com,K@*.azure.com"})
    assert config.provider_keys == {"OPENAI_API_KEY": ("api.openai.com",), "K": ("*.azure.com",)}


@pytest.fixture
def stored_leaky_config(application, member, listener, monkeypatch, production):
    """A config saved before the rule existed: SECRET_KEY sent to a host that records it (a
    loopback listener, explicitly allowed as a destination so only the key rule stands)."""
    collector = listener(body={"id": "x", "choices": []})
    production.AIRLOCK_EGRESS_ALLOW = [f"127.0.0.1:{collector.port}"]
    monkeypatch.setenv("SECRET_KEY", SECRET)
    engineer = member(Role.ENGINEER, "author")
    content = {**MODEL_CONTENT, "base_url": f"{collector.url}/v1", "max_retries": 0}
    head = make_model_config(application, engineer, key="leaky", content=content)
    content = {**content, "api_key_env": "SECRET_KEY"}
    # Straight through the versioning layer, as the row was stored before this rule.
    version = save_version(head, content, author=engineer, base_number=head.latest_number).version
    return version, collector


def test_the_model_config_page_warns_that_a_stored_config_breaks_the_rule(
    engineer_client, application, stored_leaky_config
):
    version, _ = stored_leaky_config
    for name, kwargs in (
        ("head_detail", {}),
        ("version_detail", {"number": version.number}),
    ):
        page = engineer_client.get(
            reverse(
                f"registry:{name}",
                kwargs={"app": application.key, "kind": "models", "key": "leaky", **kwargs},
            )
        ).content.decode()
        assert "This model config cannot be used for runs" in page
        assert "SECRET_KEY is one of Airlock&#x27;s own settings" in page


def test_launching_an_eval_with_such_a_config_is_refused(
    engineer_client, application, stored_leaky_config
):
    version, collector = stored_leaky_config
    prompt = make_prompt(application, engineer_client.engineer).versions.get()
    rows = [{"id": "q1", "question": "What is the refund window?", "expected_contains": ["30"]}]
    _, dataset = publish_items(application, engineer_client.engineer, "golden", rows)
    response = engineer_client.post(
        reverse("evals:new", kwargs={"app": application.key}),
        {
            "target_type": "prompt_model", "dataset_version": str(dataset.pk),
            "prompt_version": str(prompt.pk), "model_version": str(version.pk),
            "scorers": ["contains_all"], "judge_model_version": "", "judge_faithfulness": "",
            "judge_relevance": "", "gates": "", "cost_cap": "", "concurrency": "",
            "http_url": "", "http_answer_path": "answer", "http_sources_path": "sources",
        },
    )  # fmt: skip
    errors = response.context["form"].errors["model_version"]
    assert errors[0].startswith(f"leaky v{version.number} cannot be used for runs: api_key_env:")
    assert not EvalRun.objects.exists()
    assert collector.requests == []


def test_a_run_already_queued_fails_its_items_instead_of_sending_the_key(
    engineer_client, application, stored_leaky_config, network
):
    version, collector = stored_leaky_config
    engineer = engineer_client.engineer
    prompt = make_prompt(application, engineer).versions.get()
    rows = [
        {
            "id": f"q{n}",
            "question": "What is the refund window?",
            "expected_contains": ["30"],
            "variables": {"context": "Refunds within 30 days."},  # every prompt variable filled
        }
        for n in range(3)
    ]
    _, dataset = publish_items(application, engineer, "golden", rows)
    # Queued before the upgrade: the run row exists with the leaky version.
    run = EvalRun.objects.create(
        application=application, target_type=EvalRun.Target.PROMPT_MODEL, prompt_version=prompt,
        model_version=version, dataset_version=dataset, scorers=["contains_all"], gates=[],
        concurrency=2, fingerprint="queued-before-upgrade", label="leaky", created_by=engineer,
    )  # fmt: skip
    evals.execute_run(run.pk, owner="test")
    results = list(EvalResult.objects.filter(run=run))
    assert collector.requests == []
    assert network.refused == []
    assert len(results) == 3 and {r.status for r in results} == {"error"}
    assert all("SECRET_KEY is one of Airlock's own settings" in r.error for r in results)
    page = engineer_client.get(reverse("evals:run", kwargs={"app": application.key, "pk": run.pk}))
    assert SECRET not in page.content.decode()


def test_a_key_goes_only_to_the_host_it_is_bound_to_at_send_time(
    application, member, listener, monkeypatch, production
):
    """The check at use: a config valid when saved stops sending once the binding changes."""
    from console.evals import llm

    collector = listener(body={"id": "x", "choices": []})
    production.AIRLOCK_EGRESS_ALLOW = [f"127.0.0.1:{collector.port}"]
    production.AIRLOCK_PROVIDER_KEYS = {"PROVIDER_KEY": (f"127.0.0.1:{collector.port}",)}
    monkeypatch.setenv("PROVIDER_KEY", "sk-provider")
    config = {**MODEL_CONTENT, "base_url": f"{collector.url}/v1", "api_key_env": "PROVIDER_KEY"}
    assert MODEL_CONFIG.clean(config)["api_key_env"] == "PROVIDER_KEY"
    production.AIRLOCK_PROVIDER_KEYS = {"PROVIDER_KEY": ("api.openai.com",)}
    with pytest.raises(llm.LLMError, match=r"PROVIDER_KEY may only be sent to api\.openai\.com"):
        llm.complete(config, [{"role": "user", "content": "hi"}])
    assert collector.requests == []
    assert not ModelConfigVersion.objects.exists()
