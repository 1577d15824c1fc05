"""The golden-set editor warns which variables of the prompts evaluated on the set its items do
not fill (an eval makes such items errors), with a bounded number of queries."""

from __future__ import annotations

import html
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from console.datasets import services
from console.datasets.selectors import prompt_variable_gaps
from console.evals import services as evals
from console.registry import services as registry
from console.registry.kinds import MODEL_CONFIG, PROMPT
from tests.datasets.helpers import HTMX, seed, url

SUPPORT = {
    "system": "You answer about order {{ order_id }}.",
    "user": "{{ question }}",
    "variables": ["question", "order_id"],
    "params": {},
}
MODEL = {
    "provider": "local",
    "model": "sim-small",
    "base_url": "http://127.0.0.1:8100/v1",  # the simulator: the address tests allow
    "temperature": 0.0,
    "max_tokens": 256,
    "timeout_s": 5,
    "max_retries": 0,
    "max_concurrency": 4,
    "price_input_per_1m": 0.0,
    "price_cached_input_per_1m": 0.0,
    "price_output_per_1m": 0.0,
}


def items(total: int, missing: int) -> list[dict]:
    """`total` items; the first `missing` do not fill order_id."""
    return [
        {
            "id": f"q-{n:03d}",
            "question": f"Where is order number {n}?",
            "expected_contains": ["shipped"],
            "variables": {} if n <= missing else {"order_id": f"A-{n}"},
        }
        for n in range(1, total + 1)
    ]


def text(response) -> str:
    """The page's text with tags removed and whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())


@pytest.fixture
def engineer(member):
    return member("engineer", "eng")


@pytest.fixture
def model_version(application, engineer):
    return registry.create_head(
        actor=engineer, kind=MODEL_CONFIG, application=application, key="sim", name="Sim",
        content=MODEL,
    ).version  # fmt: skip


@pytest.fixture
def support(application, engineer):
    return registry.create_head(
        actor=engineer, kind=PROMPT, application=application, key="support-answer",
        name="Support", content=SUPPORT,
    ).version  # fmt: skip


def evaluate(dataset, prompt_version, model_version, engineer):
    """Launch (not execute) an eval of `prompt_version` on the set's latest version."""
    version = dataset.versions.order_by("-number").first()
    return evals.launch_run(
        actor=engineer,
        application=dataset.application,
        dataset_version=version,
        prompt_version=prompt_version,
        model_version=model_version,
        scorers=["contains_all"],
    )


def published(dataset, curator, rows):
    seed(dataset, rows, actor=curator)
    services.publish(actor=curator, dataset=dataset, message="v")
    dataset.refresh_from_db()
    return dataset


def test_editor_warns_which_items_do_not_fill_a_variable_of_an_evaluated_prompt(
    curator_client, curator, dataset, engineer, support, model_version
):
    published(dataset, curator, items(60, missing=12))
    evaluate(dataset, support, model_version, engineer)

    response = curator_client.get(url("editor", dataset))
    assert response.status_code == 200
    page = text(response)
    assert "support-answer@1 declares order_id ; 12 of 60 items do not fill it" in page
    assert 'id="variable-gaps"' in response.content.decode()
    # {{ question }} is filled from every item's question: never a warning.
    assert "declares question" not in page


def test_no_warning_when_every_item_fills_the_variables(
    curator_client, curator, dataset, engineer, support, model_version
):
    published(dataset, curator, items(10, missing=0))
    evaluate(dataset, support, model_version, engineer)
    page = text(curator_client.get(url("editor", dataset)))
    assert "declares" not in page
    assert "do not fill" not in page


def test_prompts_never_evaluated_on_the_set_are_not_checked(
    curator_client, curator, dataset, fresh, engineer, support, model_version
):
    published(dataset, curator, items(10, missing=4))
    other = published(fresh("other"), curator, items(3, missing=0))
    evaluate(other, support, model_version, engineer)
    assert "declares" not in text(curator_client.get(url("editor", dataset)))


def test_the_live_version_of_an_evaluated_prompt_is_checked_too(
    curator_client, curator, dataset, application, engineer, support, model_version
):
    published(dataset, curator, items(10, missing=0))
    evaluate(dataset, support, model_version, engineer)
    v2 = registry.save_head_version(
        actor=engineer,
        head=support.head,
        content={
            **SUPPORT,
            "user": "({{ locale }}) {{ question }}",
            "variables": ["question", "order_id", "locale"],
        },
        base_number=1,
    ).version
    dev = application.environments.get(key="dev")
    registry.bind_version(actor=engineer, environment=dev, version=v2)
    # An unrelated prompt live in the application is not this set's business.
    registry.bind_version(
        actor=engineer,
        environment=dev,
        version=registry.create_head(
            actor=engineer, kind=PROMPT, application=application, key="classifier",
            name="Classifier", content={**SUPPORT, "variables": ["question", "order_id"]},
        ).version,
    )  # fmt: skip
    page = text(curator_client.get(url("editor", dataset)))
    assert "support-answer@2 declares locale ; 10 of 10 items do not fill it" in page
    assert "declares order_id" not in page  # every item fills it
    assert "classifier" not in page


def test_several_missing_variables_and_versions_are_listed_once_each(
    curator, dataset, engineer, support, model_version
):
    published(dataset, curator, items(5, missing=2))
    evaluate(dataset, support, model_version, engineer)
    v2 = registry.save_head_version(
        actor=engineer,
        head=support.head,
        content={
            **SUPPORT,
            "user": "{{ tier }} {{ question }}",
            "variables": [*SUPPORT["variables"], "tier"],
        },
        base_number=1,
    ).version
    evaluate(dataset, v2, model_version, engineer)
    gaps = prompt_variable_gaps(dataset)
    assert [(g.prompt, g.variable, g.missing, g.total, g.also) for g in gaps] == [
        ("support-answer@2", "order_id", 2, 5, [1]),
        ("support-answer@2", "tier", 5, 5, []),
    ]


def test_the_warning_refreshes_after_an_edit_and_viewers_see_it(
    curator_client, viewer_client, curator, dataset, engineer, support, model_version
):
    published(dataset, curator, items(4, missing=2))
    evaluate(dataset, support, model_version, engineer)
    fragment = curator_client.get(url("variable_gaps", dataset), headers=HTMX)
    assert fragment.status_code == 200
    assert "2 of 4 items do not fill it" in text(fragment)
    assert "<html" not in fragment.content.decode()
    assert 'hx-trigger="dataset-changed from:body' in fragment.content.decode()

    # The curator fills order_id on one item through the inline editor.
    cell = curator_client.get(
        url("cell", dataset, "edit=1", item_id="q-001", field="variables"), headers=HTMX
    )
    base = html.unescape(re.search(r'name="base" value="([^"]*)"', cell.content.decode())[1])
    saved = curator_client.post(
        url("cell", dataset, item_id="q-001", field="variables"),
        {"value": '{"order_id": "A-1"}', "base": base},
        headers=HTMX,
    )
    assert saved.status_code == 200
    assert saved["HX-Trigger"] == "dataset-changed"
    assert "1 of 4 items do not fill it" in text(
        viewer_client.get(url("variable_gaps", dataset), headers=HTMX)
    )
    assert "1 of 4 items do not fill it" in text(viewer_client.get(url("editor", dataset)))


def test_editor_query_count_does_not_grow_with_prompts_or_runs(
    curator_client,
    curator,
    dataset,
    engineer,
    support,
    model_version,
    django_assert_max_num_queries,
):
    published(dataset, curator, items(50, missing=5))
    counts = []
    head = support.head
    version = support
    for n in range(1, 7):
        evaluate(dataset, version, model_version, engineer)
        with django_assert_max_num_queries(15), CaptureQueriesContext(connection) as queries:
            response = curator_client.get(url("editor", dataset))
        assert response.status_code == 200
        counts.append(len(queries))
        version = registry.save_head_version(
            actor=engineer,
            head=head,
            content={**SUPPORT, "user": f"{{{{ v{n} }}}} {{{{ question }}}}",
                     "variables": [*SUPPORT["variables"], f"v{n}"]},
            base_number=n,
        ).version  # fmt: skip
    assert len(set(counts)) == 1, counts
    assert "support-answer@6 declares v5 ; 50 of 50 items do not fill it" in text(response)
