"""Registry pages through the test client: editor, preview fragment, conflicts, diff, lists."""

import pytest
from django.urls import reverse

from console.registry import services
from tests.factories import PROMPT_CONTENT, make_model_config, make_prompt


@pytest.fixture
def prompt(application, engineer):
    return make_prompt(application, engineer)


def url(name, application, **kw):
    return reverse(f"registry:{name}", kwargs={"app": application.key, **kw})


def form_data(base: int, **changes):
    data = {
        "system": PROMPT_CONTENT["system"],
        "user": PROMPT_CONTENT["user"],
        "variables": "context, question",
        "params": '{"top_k": 5}',
        "base_number": str(base),
        "message": "",
    }
    data.update(changes)
    return data


def test_editor_saves_a_new_version_and_redirects(engineer_client, application, prompt):
    response = engineer_client.post(
        url("head_edit", application, kind="prompts", key=prompt.key),
        form_data(1, user="Question: {{ question }}", message="clearer"),
    )
    assert response.status_code == 302
    prompt.refresh_from_db()
    assert prompt.latest_number == 2
    assert prompt.versions.get(number=2).message == "clearer"


def test_editor_shows_field_errors_and_saves_nothing(engineer_client, application, prompt):
    response = engineer_client.post(
        url("head_edit", application, kind="prompts", key=prompt.key),
        form_data(1, user="{{ question }} {{ nope }}", params="{not json"),
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "not valid JSON" in body
    prompt.refresh_from_db()
    assert prompt.latest_number == 1


def test_service_validation_error_lands_on_the_named_field(engineer_client, application, prompt):
    response = engineer_client.post(
        url("head_edit", application, kind="prompts", key=prompt.key),
        form_data(1, user="{{ question }} {{ nope }}"),
    )
    form = response.context["content_form"]
    assert any("{{ nope }} is used" in e for e in form.errors["variables"])


def test_stale_editor_shows_the_other_persons_change_and_keeps_my_text(
    engineer_client, application, prompt, member
):
    other = member("engineer", "alice")
    services.save_head_version(
        actor=other, head=prompt, content={**PROMPT_CONTENT, "system": "Alice wrote this"},
        base_number=1,
    )  # fmt: skip
    response = engineer_client.post(
        url("head_edit", application, kind="prompts", key=prompt.key),
        form_data(1, user="My edit {{ question }}"),
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "Someone saved a newer version" in body and "Alice wrote this" in body
    assert "My edit {{ question }}" in body
    assert response.context["meta_form"]["base_number"].value() == "2"
    prompt.refresh_from_db()
    assert prompt.latest_number == 2


def test_preview_fragment_renders_samples_and_flags_problems(engineer_client, application):
    response = engineer_client.post(
        reverse("registry:prompt_preview", kwargs={"app": application.key}),
        {
            "system": "Hello {{ name }}",
            "user": "{{ question }} {{ oops",
            "variables": "name, unused",
            "sample": '{"name": "Ada"}',
        },
        HTTP_HX_REQUEST="true",
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert body.strip().startswith('<div id="preview"')
    assert "Hello Ada" in body
    assert "never closed" in body
    assert "unused is declared but not used" in body
    assert "<html" not in body


def test_create_new_model_config_via_form(engineer_client, application, settings):
    settings.AIRLOCK_EGRESS_ALLOW = ["api.example.com"]
    settings.AIRLOCK_PROVIDER_KEYS = {"OPENAI_KEY": ("api.example.com",)}
    response = engineer_client.post(
        url("head_new", application, kind="models"),
        {
            "key": "cheap", "name": "Cheap", "description": "", "provider": "openai",
            "base_url": "https://api.example.com/v1", "model": "small", "api_key_env": "OPENAI_KEY",
            "temperature": "0", "max_tokens": "100", "timeout_s": "10", "max_retries": "2",
            "max_concurrency": "4", "price_input_per_1m": "0.1",
            "price_cached_input_per_1m": "0.05", "price_output_per_1m": "0.4",
            "base_number": "0", "message": "new",
        },
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    assert application.model_configs.get(key="cheap").latest_number == 1


def test_diff_page_shows_changed_lines(engineer_client, application, prompt, engineer):
    services.save_head_version(
        actor=engineer, head=prompt,
        content={**PROMPT_CONTENT, "system": "Answer for Acme.\nBe brief.\n{{ context }}"},
        base_number=1,
    )  # fmt: skip
    response = engineer_client.get(
        url("diff", application, kind="prompts", key=prompt.key) + "?a=1&b=2"
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert "Be brief." in body and "row-replace" in body
    assert response.context["changed_count"] == 1


def test_diff_of_missing_version_is_404(engineer_client, application, prompt):
    diff_url = url("diff", application, kind="prompts", key=prompt.key)
    response = engineer_client.get(diff_url + "?a=1&b=9")
    assert response.status_code == 404


def test_bind_into_protected_environment_explains_promotion(engineer_client, application, prompt):
    response = engineer_client.post(
        url("bind", application, kind="prompts", key=prompt.key),
        {"environment": "prod", "version": "1"},
        follow=True,
    )
    assert "request a promotion" in response.content.decode()
    assert not prompt.bindings.exists()


def test_list_and_dashboard_query_counts_stay_bounded(
    engineer_client, application, engineer, django_assert_max_num_queries
):
    for i in range(30):
        make_prompt(application, engineer, key=f"p{i}")
        make_model_config(application, engineer, key=f"m{i}")
    dev = application.environments.get(key="dev")
    for prompt in application.prompts.all():
        services.bind_version(actor=engineer, environment=dev, version=prompt.versions.get())
    with django_assert_max_num_queries(12):
        assert engineer_client.get(url("head_list", application, kind="prompts")).status_code == 200
    with django_assert_max_num_queries(14):
        assert engineer_client.get(url("dashboard", application)).status_code == 200
    with django_assert_max_num_queries(14):
        r = engineer_client.get(url("head_detail", application, kind="prompts", key="p1"))
        assert r.status_code == 200


def test_the_editor_saves_tools_and_shows_a_bad_one_beside_the_field(
    engineer_client, application, prompt
):
    edit = url("head_edit", application, kind="prompts", key=prompt.key)
    tool = '[{"name": "lookup_order", "parameters": {"type": "object", "properties": {}}}]'
    assert engineer_client.post(edit, form_data(1, tools=tool)).status_code == 302
    saved = prompt.versions.get(number=2).content["tools"]
    assert saved == [
        {
            "name": "lookup_order",
            "description": "",
            "parameters": {"type": "object", "properties": {}},
        }
    ]
    # Reopened, the editor shows the tools as saved; the version page lists them.
    assert (
        "&quot;name&quot;: &quot;lookup_order&quot;" in engineer_client.get(edit).content.decode()
    )
    detail = engineer_client.get(url("head_detail", application, kind="prompts", key=prompt.key))
    assert "lookup_order()" in detail.content.decode()
    for bad, message in (
        ("{not json", "not valid JSON"),
        ('{"name": "x"}', "must be a JSON array of tools"),
        ('[{"name": "x y"}]', "tool 1: name must be 1-64 letters, digits, _ or -"),
    ):
        response = engineer_client.post(edit, form_data(2, tools=bad))
        assert response.status_code == 200
        assert any(message in e for e in response.context["content_form"].errors["tools"]), bad
    prompt.refresh_from_db()
    assert prompt.latest_number == 2


def test_saving_tools_changes_nothing_prod_serves(client, member, application, prompt):
    """Tools are version content like any other: an engineer's new version with tools is not
    served in prod until a promotion binds it, and roles that may not edit prompts cannot add
    them at all."""
    from console.accounts.roles import Role
    from console.api.snapshot import document

    prod = application.environments.get(key="prod")
    services.bind_version(
        actor=None, environment=prod, version=prompt.versions.get(number=1), via_promotion=True
    )
    before, _ = document(prod)
    edit = url("head_edit", application, kind="prompts", key=prompt.key)
    tool = '[{"name": "issue_refund"}]'
    for role in (Role.CURATOR, Role.APPROVER, Role.VIEWER):
        client.force_login(member(role, f"r-{role}"))
        assert client.post(edit, form_data(1, tools=tool)).status_code == 403
    assert prompt.versions.count() == 1
    client.force_login(member(Role.ENGINEER, "eng-tools"))
    assert client.post(edit, form_data(1, tools=tool)).status_code == 302
    assert prompt.versions.get(number=2).content["tools"][0]["name"] == "issue_refund"
    after, _ = document(prod)
    assert after == before and "tools" not in after["prompts"][prompt.key]
