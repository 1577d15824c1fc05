"""Items keep the place they first appear in (added first, duplicates under their original), and
a published version reads as a read-only, paginated table."""

from __future__ import annotations

import re

import pytest

from console.datasets import services
from console.datasets.models import DatasetVersion
from tests.datasets.helpers import HTMX, generated, seed, set_fields, url


def ids_on_page(response) -> list[str]:
    return [i.item_id for i in response.context["page"].object_list]


def row_ids(body: str) -> list[str]:
    return re.findall(r'<tr id="item-([^"]+)"', body)


# ---------------------------------------------------------------- stable positions


def test_an_added_row_is_where_a_reload_shows_it(curator_client, filled):
    editor = url("editor", filled)
    response = curator_client.post(
        url("item_add", filled), {"question": "Do you ship to Mars?"}, headers=HTMX | {
            "HX-Current-URL": f"http://testserver{editor}"
        }
    )  # fmt: skip
    # The editor puts the returned row first in the table (hx-swap="afterbegin") ...
    assert 'hx-swap="afterbegin"' in curator_client.get(editor).content.decode()
    (added,) = row_ids(response.content.decode())
    # ... and a reload shows it first too, and keeps the others in their order.
    assert ids_on_page(curator_client.get(editor)) == [added, "refund-1", "ship-1", "acct-1"]

    second = curator_client.post(
        url("item_add", filled), {"question": "And to Venus?"}, headers=HTMX
    )
    (newest,) = row_ids(second.content.decode())
    assert ids_on_page(curator_client.get(editor)) == [
        newest, added, "refund-1", "ship-1", "acct-1",
    ]  # fmt: skip


def test_a_duplicate_stays_under_its_original_after_a_reload(curator_client, filled):
    response = curator_client.post(url("item_duplicate", filled, item_id="ship-1"), headers=HTMX)
    (copy,) = row_ids(response.content.decode())
    # Swapped in right after the original's row ...
    editor = curator_client.get(url("editor", filled)).content.decode()
    assert 'hx-target="closest tr" hx-swap="afterend"' in editor
    # ... which is where it stays.
    assert ids_on_page(curator_client.get(url("editor", filled))) == [
        "refund-1", "ship-1", copy, "acct-1",
    ]  # fmt: skip
    again = curator_client.post(url("item_duplicate", filled, item_id="ship-1"), headers=HTMX)
    (copy2,) = row_ids(again.content.decode())
    assert ids_on_page(curator_client.get(url("editor", filled))) == [
        "refund-1", "ship-1", copy2, copy, "acct-1",
    ]  # fmt: skip


def test_positions_hold_across_pages_imports_and_publishing(curator_client, curator, dataset):
    seed(dataset, generated(60))
    services.add_item(actor=curator, dataset=dataset, values={"id": "top", "question": "Top?"})
    seed(dataset, generated(2, start=61))  # imports append
    first = ids_on_page(curator_client.get(url("editor", dataset)))
    assert first[:2] == ["top", "item-00001"]
    last = ids_on_page(curator_client.get(url("editor", dataset, "page=2")))
    assert last[-2:] == ["item-00061", "item-00062"]
    version = services.publish(actor=curator, dataset=dataset, message="v1")
    page = curator_client.get(url("version", dataset, number=version.number))
    assert ids_on_page(page)[:2] == ["top", "item-00001"]


@pytest.mark.parametrize("query", ["page=2", "q=Question", "tag=topic-1", "changed=1"])
def test_adding_while_on_another_page_or_filter_goes_to_where_the_item_is(
    curator_client, dataset, query
):
    seed(dataset, generated(60))
    editor = url("editor", dataset)
    response = curator_client.post(
        url("item_add", dataset),
        {"question": "Brand new?"},
        headers=HTMX | {"HX-Current-URL": f"http://testserver{editor}?{query}"},
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == editor  # page 1, unfiltered: where the item now is
    landing = curator_client.get(editor)
    assert landing.context["page"].object_list[0].question == "Brand new?"
    assert "at the top of the golden set" in landing.content.decode()


# ---------------------------------------------------------------- published versions


def test_versions_page_links_each_version_to_its_items(viewer_client, filled):
    body = viewer_client.get(url("versions", filled)).content.decode()
    assert f'href="{url("version", filled, number=1)}"' in body


def test_a_published_version_reads_as_a_table(viewer_client, filled, curator):
    set_fields(filled, "ship-1", question="Changed in the draft only?")
    response = viewer_client.get(url("version", filled, number=1))
    assert response.status_code == 200
    body = response.content.decode()
    assert ids_on_page(response) == ["refund-1", "ship-1", "acct-1"]
    assert "How much is standard shipping?" in body  # the published text, not the draft's
    assert "Changed in the draft only?" not in body
    assert "<li>30 days</li>" in body
    assert '<span class="k">tier:</span> gold' in body
    assert "read-only" in body
    assert 'class="cell-form"' not in body and "tabindex" not in body  # nothing editable
    assert "?format=csv&version=1" in body


def test_version_table_is_paginated_searchable_and_bounded(
    viewer_client, curator, dataset, django_assert_max_num_queries
):
    seed(dataset, generated(120))
    services.publish(actor=curator, dataset=dataset, message="big")
    with django_assert_max_num_queries(12):
        response = viewer_client.get(url("version", dataset, number=1, query="page=3"))
    assert ids_on_page(response) == [f"item-{k:05d}" for k in range(101, 121)]
    assert "120 items · page 3 of 3" in response.content.decode()
    found = viewer_client.get(url("version", dataset, number=1, query="q=number 7 about"))
    assert ids_on_page(found) == ["item-00007"]
    by_id = viewer_client.get(url("version", dataset, number=1, query="q=item-00042"))
    assert ids_on_page(by_id) == ["item-00042"]


def test_query_count_does_not_grow_with_the_version(
    viewer_client, curator, dataset, django_assert_max_num_queries
):
    seed(dataset, generated(30))
    services.publish(actor=curator, dataset=dataset, message="small")
    seed(dataset, generated(400, start=31))
    services.publish(actor=curator, dataset=dataset, message="large")
    for number in (1, 2):
        with django_assert_max_num_queries(12):
            assert viewer_client.get(url("version", dataset, number=number)).status_code == 200


def test_unknown_version_is_not_found(viewer_client, filled):
    assert viewer_client.get(url("version", filled, number=9)).status_code == 404
    assert DatasetVersion.objects.filter(head=filled).count() == 1


def test_version_page_needs_access_to_the_application(client, member, filled):
    from django.contrib.auth import get_user_model

    outsider = get_user_model().objects.create_user("outsider", password="x")
    client.force_login(outsider)
    assert client.get(url("version", filled, number=1)).status_code in {403, 404}
