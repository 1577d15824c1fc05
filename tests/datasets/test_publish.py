"""Publishing the draft as immutable versions, the publish preview, and diffs between any two
versions or a version and the draft."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from console.core.versioning import ImmutableVersionError
from console.datasets import selectors, services
from console.datasets.models import Dataset, DatasetVersion, ItemSnapshot, PublishedItem
from tests.datasets.helpers import actions_since, events_since, last_seq, set_fields, state, url


def edit(dataset, curator, item_id, field, value):
    set_fields(dataset, item_id, actor=curator, **{field: value})


def change_draft(dataset, curator):
    """v1 → draft: refund-1 changed, ship-1 removed, new-1 added, acct-1 untouched."""
    edit(dataset, curator, "refund-1", "expected_contains", ["30 days", "receipt"])
    services.delete_items(actor=curator, dataset=dataset, item_ids=["ship-1"])
    services.add_item(
        actor=curator, dataset=dataset, values={"id": "new-1", "question": "Do you ship to Mars?"}
    )


def published(version) -> list[tuple[str, str]]:
    return [(i["id"], i["question"]) for i in selectors.version_items(version)]


def test_first_publish_freezes_the_draft_as_v1(filled, curator):
    v1 = DatasetVersion.objects.get(head=filled, number=1)
    assert filled.latest_number == 1
    assert v1.author == curator and v1.message == "first" and v1.parent is None
    assert v1.content["count"] == 3
    assert [(i["id"], i["expected_contains"]) for i in selectors.version_items(v1)] == [
        ("refund-1", ["30 days"]),
        ("ship-1", ["$4.99"]),
        ("acct-1", ["Forgot password"]),
    ]
    assert all(not i.changed_since_published for i in filled.draft_items.all())


def test_publish_page_previews_added_removed_and_changed(curator_client, filled, curator):
    change_draft(filled, curator)
    response = curator_client.get(url("publish", filled))
    assert response.status_code == 200
    diff = response.context["diff"]
    assert (diff.added, diff.removed, diff.changed) == (["new-1"], ["ship-1"], ["refund-1"])
    changes = {c.item_id: c for c in response.context["changes"]}
    assert changes["refund-1"].status == "changed"
    assert [f.path for f in changes["refund-1"].fields] == ["expected_contains"]
    assert changes["new-1"].question == "Do you ship to Mars?"
    assert changes["ship-1"].question == "How much is standard shipping?"
    body = response.content.decode()
    assert "Publish v2" in body
    assert "receipt" in body


def test_publish_creates_the_next_version_with_one_audit_event(curator_client, filled, curator):
    change_draft(filled, curator)
    seq = last_seq()
    response = curator_client.post(url("publish", filled), {"message": "add mars, drop shipping"})
    assert response.status_code == 302
    assert response["Location"] == url("editor", filled)
    filled.refresh_from_db()
    assert filled.latest_number == 2
    v2 = DatasetVersion.objects.get(head=filled, number=2)
    assert v2.parent.number == 1
    assert v2.message == "add mars, drop shipping"
    # An item added in the editor goes first in the draft, and so in the version.
    assert [i for i, _ in published(v2)] == ["new-1", "refund-1", "acct-1"]
    assert [i for i, _ in published(v2.parent)] == ["refund-1", "ship-1", "acct-1"]
    events = events_since(seq)
    assert [e.action for e in events] == ["dataset.publish"]
    assert events[0].after == {"version": 2, "count": 3, "added": 1, "removed": 1, "changed": 1}
    assert events[0].reason == "add mars, drop shipping"
    # Unchanged items share their snapshot with v1: only changed content is stored again.
    acct = PublishedItem.objects.filter(version__head=filled, item_id="acct-1")
    assert acct.count() == 2
    assert len(set(acct.values_list("snapshot_id", flat=True))) == 1
    assert filled.draft_items.filter(published_hash__isnull=True).count() == 0


def test_publish_with_no_change_creates_nothing(curator_client, filled):
    before = state(filled)
    page = curator_client.get(url("publish", filled))
    assert page.context["diff"].empty
    assert "Nothing to publish" in page.content.decode()
    response = curator_client.post(url("publish", filled), {"message": "again"}, follow=True)
    assert response.redirect_chain[-1][0] == url("editor", filled)
    assert "Nothing to publish" in response.content.decode()
    assert state(filled) == before


def test_publish_after_changing_and_reverting_creates_nothing(filled, curator):
    edit(filled, curator, "ship-1", "question", "Temporary?")
    edit(filled, curator, "ship-1", "question", "How much is standard shipping?")
    assert services.publish(actor=curator, dataset=filled, message="noop") is None
    assert filled.versions.count() == 1


@pytest.mark.parametrize("message", ["", "   "])
def test_publish_without_a_message_is_refused(curator_client, filled, curator, message):
    change_draft(filled, curator)
    before = state(filled)
    response = curator_client.post(url("publish", filled), {"message": message})
    assert response.status_code == 200
    assert response.context["form"].errors["message"]
    assert state(filled) == before
    with pytest.raises(ValidationError) as caught:
        services.publish(actor=curator, dataset=filled, message=message)
    assert "message" in caught.value.message_dict
    assert state(filled) == before


def test_an_empty_draft_cannot_be_published(dataset, curator):
    with pytest.raises(ValidationError) as caught:
        services.publish(actor=curator, dataset=dataset, message="empty")
    assert "items" in caught.value.message_dict
    assert dataset.versions.count() == 0


def test_published_versions_are_immutable(filled):
    v1 = DatasetVersion.objects.get(head=filled, number=1)
    with pytest.raises(ImmutableVersionError):
        PublishedItem.objects.filter(version=v1).update(position=9)
    with pytest.raises(ImmutableVersionError):
        PublishedItem.objects.filter(version=v1).delete()
    snapshot = PublishedItem.objects.filter(version=v1).first().snapshot
    snapshot.content = {"question": "tampered"}
    with pytest.raises(ImmutableVersionError):
        snapshot.save()
    assert ItemSnapshot.objects.get(pk=snapshot.pk).content["question"] != "tampered"


def test_versions_page_lists_every_version(curator_client, filled, curator):
    change_draft(filled, curator)
    services.publish(actor=curator, dataset=filled, message="second")
    response = curator_client.get(url("versions", filled))
    assert [v.number for v in response.context["versions"]] == [2, 1]
    body = response.content.decode()
    assert "?a=1&b=2" in body
    assert "format=csv&version=1" in body


@pytest.fixture
def three_versions(filled, curator):
    """v1 (3 items) → v2 (refund-1 changed, ship-1 removed, new-1 added) → v3 (acct-1 changed)
    → draft (new-1 removed, later-1 added)."""
    change_draft(filled, curator)
    services.publish(actor=curator, dataset=filled, message="v2")
    edit(filled, curator, "acct-1", "tags", ["account"])
    services.publish(actor=curator, dataset=filled, message="v3")
    services.delete_items(actor=curator, dataset=filled, item_ids=["new-1"])
    services.add_item(actor=curator, dataset=filled, values={"id": "later-1", "question": "Later?"})
    filled.refresh_from_db()
    return filled


@pytest.mark.parametrize(
    ("a", "b", "added", "removed", "changed"),
    [
        ("1", "2", ["new-1"], ["ship-1"], ["refund-1"]),
        ("2", "3", [], [], ["acct-1"]),
        ("1", "3", ["new-1"], ["ship-1"], ["refund-1", "acct-1"]),
        ("3", "1", ["ship-1"], ["new-1"], ["refund-1", "acct-1"]),
        ("3", "draft", ["later-1"], ["new-1"], []),
        ("1", "draft", ["later-1"], ["ship-1"], ["refund-1", "acct-1"]),
        ("2", "2", [], [], []),
    ],
)
def test_diff_any_two_versions_and_the_draft(
    curator_client, three_versions, a, b, added, removed, changed
):
    response = curator_client.get(url("diff", three_versions, f"a={a}&b={b}"))
    assert response.status_code == 200
    diff = response.context["diff"]
    assert (diff.added, diff.removed, sorted(diff.changed)) == (added, removed, sorted(changed))
    statuses = {c.item_id: c.status for c in response.context["changes"]}
    assert statuses == {
        **dict.fromkeys(added, "added"),
        **dict.fromkeys(removed, "removed"),
        **dict.fromkeys(changed, "changed"),
    }


def test_diff_shows_field_level_changes(curator_client, three_versions):
    response = curator_client.get(url("diff", three_versions, "a=2&b=3"))
    (change,) = response.context["changes"]
    (field,) = change.fields
    assert field.path == "tags"
    assert (field.before, field.after) == (["account", "shipping"], ["account"])
    assert "No differences" not in response.content.decode()


def test_diff_defaults_to_latest_against_its_parent(curator_client, three_versions):
    response = curator_client.get(url("diff", three_versions))
    assert (response.context["old"].number, response.context["new"].number) == (2, 3)
    draft = curator_client.get(url("diff", three_versions, "b=draft"))
    assert draft.context["old"].number == 3 and draft.context["new"] is None
    assert draft.context["diff"].added == ["later-1"]


def test_diff_against_nothing_lists_every_item_as_added(curator_client, three_versions):
    response = curator_client.get(url("diff", three_versions, "a=0&b=1"))
    assert response.context["diff"].added == ["refund-1", "ship-1", "acct-1"]


@pytest.mark.parametrize("query", ["a=9&b=1", "a=1&b=9", "a=x&b=1", "b=nope"])
def test_diff_of_a_version_that_does_not_exist_is_not_found(curator_client, three_versions, query):
    assert curator_client.get(url("diff", three_versions, query)).status_code == 404


def test_publish_and_audit_are_one_transaction(filled, curator, monkeypatch):
    """A failure after the version row is written leaves no version, no items, no event."""
    edit(filled, curator, "ship-1", "note", "x")
    before = state(filled)
    seq = last_seq()

    def boom(*args, **kwargs):
        raise RuntimeError("audit down")

    monkeypatch.setattr(services.audit, "record", boom)
    with pytest.raises(RuntimeError):
        services.publish(actor=curator, dataset=filled, message="will fail")
    assert state(filled) == before
    assert actions_since(seq) == []


def test_publish_with_a_dataset_loaded_before_another_publish(filled, curator):
    stale = Dataset.objects.get(pk=filled.pk)
    edit(filled, curator, "ship-1", "note", "first change")
    services.publish(actor=curator, dataset=filled, message="v2 by someone else")
    edit(filled, curator, "ship-1", "note", "second change")
    version = services.publish(actor=curator, dataset=stale, message="v3")
    assert version is not None and version.number == 3
