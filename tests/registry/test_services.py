"""Registry services: validation by field, audited versions and bindings, protected envs."""

import pytest
from django.core.exceptions import ValidationError

from console.audit.models import AuditEvent
from console.core.versioning import VersionConflict
from console.registry import services
from console.registry.kinds import MODEL_CONFIG, PROMPT
from console.registry.models import PromptBinding
from tests.factories import MODEL_CONTENT, PROMPT_CONTENT, make_model_config, make_prompt


def errors_of(exc: pytest.ExceptionInfo) -> dict:
    return exc.value.message_dict


def test_creating_a_prompt_makes_v1_and_one_audit_event(application, engineer):
    before = AuditEvent.objects.count()
    prompt = make_prompt(application, engineer, key="greet")
    assert prompt.latest_number == 1
    event = AuditEvent.objects.order_by("-seq").first()
    assert AuditEvent.objects.count() == before + 1
    assert (event.action, event.object_label) == ("prompt.create", "greet@1")
    assert event.actor_label == "eng"


def test_duplicate_key_is_refused_naming_the_key(application, engineer):
    make_prompt(application, engineer, key="greet")
    with pytest.raises(ValidationError) as err:
        make_prompt(application, engineer, key="greet")
    assert "already exists" in errors_of(err)["key"][0]


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"user": "{{ question }} {{ extra }}"}, "variables", "{{ extra }} is used (user line 1)"),
        ({"system": "Hi\n{{ bad|upper }}"}, "system", "line 2, column 1"),
        ({"system": "{% if x %}"}, "system", "tags are not supported"),
        ({"user": "{{ question"}, "user", "never closed"),
        ({"variables": ["context", "question", "9x"]}, "variables", "not a valid variable name"),
        ({"system": "", "user": ""}, "user", "both are empty"),
    ],
)
def test_prompt_problems_are_reported_on_the_field_with_position(
    application, engineer, change, field, fragment
):
    prompt = make_prompt(application, engineer)
    with pytest.raises(ValidationError) as err:
        services.save_head_version(
            actor=engineer, head=prompt, content={**PROMPT_CONTENT, **change}, base_number=1
        )
    assert any(fragment in m for m in errors_of(err)[field]), errors_of(err)
    assert prompt.versions.count() == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"base_url": "ftp://x"}, "base_url"),
        ({"base_url": "https://user:secret@api.example.com/v1"}, "base_url"),
        ({"api_key_env": "sk-live-abc123"}, "api_key_env"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"price_output_per_1m": "lots"}, "price_output_per_1m"),
        ({"model": ""}, "model"),
    ],
)
def test_model_config_problems_name_the_field(application, engineer, change, field):
    with pytest.raises(ValidationError) as err:
        services.create_head(
            actor=engineer, kind=MODEL_CONFIG, application=application, key="m", name="M",
            content={**MODEL_CONTENT, **change},
        )  # fmt: skip
    assert field in errors_of(err)
    assert not application.model_configs.exists()


def test_saving_a_version_audits_before_and_after(application, engineer):
    prompt = make_prompt(application, engineer)
    content = {**PROMPT_CONTENT, "user": "Q: {{ question }}"}
    result = services.save_head_version(
        actor=engineer, head=prompt, content=content, base_number=1, message="prefix"
    )
    event = AuditEvent.objects.order_by("-seq").first()
    assert result.created and result.version.number == 2
    assert event.action == "prompt.version.create"
    assert event.before["user"] == "{{ question }}" and event.after["user"] == "Q: {{ question }}"
    assert event.reason == "prefix"


def test_no_op_save_writes_no_audit_event(application, engineer):
    prompt = make_prompt(application, engineer)
    count = AuditEvent.objects.count()
    result = services.save_head_version(
        actor=engineer, head=prompt, content=dict(PROMPT_CONTENT), base_number=1
    )
    assert not result.created
    assert AuditEvent.objects.count() == count


def test_conflict_leaves_no_version_and_no_event(application, engineer, member):
    other = member("engineer", "other")
    prompt = make_prompt(application, engineer)
    services.save_head_version(
        actor=other,
        head=prompt,
        content={**PROMPT_CONTENT, "user": "A {{ question }}"},
        base_number=1,
    )
    count = AuditEvent.objects.count()
    with pytest.raises(VersionConflict):
        services.save_head_version(
            actor=engineer, head=prompt, content={**PROMPT_CONTENT, "user": "B {{ question }}"},
            base_number=1,
        )  # fmt: skip
    assert AuditEvent.objects.count() == count
    assert prompt.versions.count() == 2


def test_rebinding_unprotected_environment_is_direct_and_audited(application, engineer):
    prompt = make_prompt(application, engineer)
    services.save_head_version(
        actor=engineer, head=prompt, content={**PROMPT_CONTENT, "user": "Q {{ question }}"},
        base_number=1,
    )  # fmt: skip
    dev = application.environments.get(key="dev")
    services.bind_version(actor=engineer, environment=dev, version=prompt.versions.get(number=1))
    services.bind_version(actor=engineer, environment=dev, version=prompt.versions.get(number=2))
    binding = PromptBinding.objects.get(environment=dev, head=prompt)
    assert binding.version.number == 2 and binding.bound_by == engineer
    event = AuditEvent.objects.order_by("-seq").first()
    assert event.action == "prompt.bind"
    assert (event.before, event.after) == ({"version": 1}, {"version": 2})
    assert event.environment_id == dev.pk


def test_protected_environment_requires_a_promotion(application, engineer):
    prompt = make_prompt(application, engineer)
    prod = application.environments.get(key="prod")
    count = AuditEvent.objects.count()
    with pytest.raises(services.PromotionRequired, match="prod is protected"):
        services.bind_version(actor=engineer, environment=prod, version=prompt.versions.get())
    assert not PromptBinding.objects.filter(environment=prod).exists()
    assert AuditEvent.objects.count() == count


def test_binding_across_applications_is_refused(application, engineer):
    from tests.factories import make_application

    other_app = make_application()
    prompt = make_prompt(application, engineer)
    with pytest.raises(ValidationError):
        services.bind_version(
            actor=engineer, environment=other_app.environments.get(key="dev"),
            version=prompt.versions.get(),
        )  # fmt: skip


def test_model_config_history_and_kinds_share_one_mechanism(application, engineer):
    config = make_model_config(application, engineer)
    result = services.save_head_version(
        actor=engineer, head=config, content={**MODEL_CONTENT, "temperature": 0.7}, base_number=1
    )
    assert result.version.number == 2
    assert AuditEvent.objects.order_by("-seq").first().action == "model_config.version.create"
    assert PROMPT.action != MODEL_CONFIG.action
