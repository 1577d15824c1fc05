"""The versioning core: immutability, no-op saves, gap-free numbering, edit conflicts."""

import threading

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError

from console.core.versioning import ImmutableVersionError, VersionConflict, save_version
from console.registry.models import PromptVersion
from tests.factories import PROMPT_CONTENT, make_prompt, make_user


@pytest.fixture
def prompt(application, engineer):
    return make_prompt(application, engineer)


def save(prompt, author, content, base):
    with transaction.atomic():
        return save_version(prompt, content, author=author, base_number=base)


def edited(**changes):
    return {**PROMPT_CONTENT, **changes}


def test_versions_number_from_one_and_link_parents(prompt, engineer):
    v2 = save(prompt, engineer, edited(user="Q: {{ question }}"), base=1).version
    v3 = save(prompt, engineer, edited(user="Question: {{ question }}"), base=2).version
    assert [v2.number, v3.number] == [2, 3]
    assert v3.parent_id == v2.pk and v2.parent.number == 1
    prompt.refresh_from_db()
    assert prompt.latest_number == 3


def test_saving_identical_content_creates_nothing(prompt, engineer):
    result = save(prompt, engineer, dict(PROMPT_CONTENT), base=1)
    assert result.created is False and result.version.number == 1
    # key order and 5 vs 5.0 do not make content "different"
    reordered = {k: PROMPT_CONTENT[k] for k in reversed(list(PROMPT_CONTENT))}
    reordered["params"] = {"top_k": 5.0}
    assert save(prompt, engineer, reordered, base=1).created is False
    assert PromptVersion.objects.filter(head=prompt).count() == 1


def test_save_based_on_outdated_version_is_refused_with_their_changes(prompt, engineer):
    alice = make_user("alice")
    save(prompt, alice, edited(system="Alice's system\n{{ context }}"), base=1)
    with pytest.raises(VersionConflict) as conflict:
        save(prompt, engineer, edited(user="Mine: {{ question }}"), base=1)
    err = conflict.value
    assert err.latest.number == 2 and err.base.number == 1
    assert [c.path for c in err.changes] == ["system"]
    assert "alice saved v2" in str(err)
    assert PromptVersion.objects.filter(head=prompt).count() == 2


def test_orm_refuses_to_change_or_delete_a_version(prompt):
    version = PromptVersion.objects.get(head=prompt, number=1)
    version.message = "rewritten history"
    with pytest.raises(ImmutableVersionError):
        version.save()
    with pytest.raises(ImmutableVersionError):
        version.delete()
    with pytest.raises(ImmutableVersionError):
        PromptVersion.objects.filter(pk=version.pk).update(message="x")
    with pytest.raises(ImmutableVersionError):
        PromptVersion.objects.filter(pk=version.pk).delete()
    assert PromptVersion.objects.get(pk=version.pk).message == "Created"


def test_postgres_trigger_refuses_raw_sql_update_and_delete(postgres, prompt):
    version = PromptVersion.objects.get(head=prompt, number=1)
    for sql in (
        "UPDATE registry_promptversion SET message = 'x' WHERE id = %s",
        "DELETE FROM registry_promptversion WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="immutable"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, [version.pk])
    assert PromptVersion.objects.get(pk=version.pk).message == "Created"


def test_concurrent_saves_number_without_gaps_or_duplicates(postgres_tx):
    from tests.factories import make_application, make_member

    application = make_application()
    author = make_member(application, "engineer")
    prompt = make_prompt(application, author)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            # Each writer re-reads the head and bases on what it sees: like 8 people saving at once.
            with transaction.atomic():
                head = type(prompt).objects.get(pk=prompt.pk)
                save_version(
                    head, edited(user=f"v{i} {{{{ question }}}}"), author=author,
                    base_number=head.latest_number,
                )  # fmt: skip
            outcomes.append("saved")
        except VersionConflict:
            outcomes.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    numbers = sorted(PromptVersion.objects.filter(head=prompt).values_list("number", flat=True))
    assert numbers == list(range(1, len(numbers) + 1))
    assert len(numbers) == 1 + outcomes.count("saved")
    assert outcomes.count("saved") >= 1 and len(outcomes) == 8
