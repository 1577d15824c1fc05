"""The audit chain: one event per change, written in the change's transaction, hash-linked from
seq 1, and append-only (ORM everywhere, trigger on PostgreSQL)."""

from __future__ import annotations

import itertools
import threading
from types import SimpleNamespace

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.utils import DatabaseError

from console.accounts.models import Membership
from console.accounts.roles import Role
from console.accounts.services import grant_role, revoke_membership
from console.audit import services as audit
from console.audit.models import GENESIS_HASH, ActorType, AuditEvent
from console.audit.services import SYSTEM, Actor, event_hash, signing_key
from console.audit.verify import verify_chain
from console.core import context
from console.core.versioning import ImmutableVersionError
from console.registry import services
from console.registry.kinds import MODEL_CONFIG, PROMPT
from console.registry.models import Application, Environment, Prompt, PromptBinding
from tests.audit.helpers import chain, last_seq, new_events
from tests.factories import MODEL_CONTENT, PROMPT_CONTENT, make_prompt, make_user


def edited_prompt(**changes) -> dict:
    return {**PROMPT_CONTENT, **changes}


@pytest.fixture
def prompt(application, engineer):
    return make_prompt(application, engineer)


def env(application, key: str) -> Environment:
    return application.environments.get(key=key)


def assert_user_actor(event: AuditEvent, user) -> None:
    assert (event.actor_type, event.actor_id, event.actor_label) == (
        ActorType.USER,
        user.pk,
        user.get_username(),
    )


# --- one event per change, with actor, action, label, before/after ------------------------------


def test_create_application_writes_one_event(db):
    admin = make_user("root")
    with new_events() as events:
        app = services.create_application(
            actor=admin, key="billing", name="Billing", environments=[{"key": "dev", "name": "dev"}]
        )
    [event] = events
    assert_user_actor(event, admin)
    assert event.action == "application.create"
    assert (event.object_type, event.object_id, event.object_label) == (
        "application",
        str(app.pk),
        "billing",
    )
    assert event.application_id == app.pk and event.environment_id is None
    assert event.before is None
    assert event.after == {"key": "billing", "name": "Billing", "environments": ["dev"]}


@pytest.mark.parametrize(
    ("kind", "content", "model"),
    [(PROMPT, PROMPT_CONTENT, "prompt"), (MODEL_CONFIG, MODEL_CONTENT, "modelconfig")],
    ids=["prompt", "model_config"],
)
def test_create_head_writes_one_event(application, engineer, kind, content, model):
    with new_events() as events:
        result = services.create_head(
            actor=engineer, kind=kind, application=application, key="main", name="Main",
            content=content, message="first cut",
        )  # fmt: skip
    [event] = events
    head = result.version.head
    assert_user_actor(event, engineer)
    assert event.action == f"{kind.action}.create"
    assert (event.object_type, event.object_id, event.object_label) == (
        model,
        str(head.pk),
        "main@1",
    )
    assert event.application_id == application.pk
    assert event.before is None
    assert event.after == {"key": "main", "name": "Main", "content": result.version.content}
    assert event.reason == "first cut"


def test_save_head_version_writes_one_event_with_before_and_after(prompt, engineer, application):
    v1 = prompt.versions.get(number=1)
    new = edited_prompt(user="Q: {{ question }}")
    with new_events() as events:
        result = services.save_head_version(
            actor=engineer, head=prompt, content=new, base_number=1, message="shorter"
        )
    [event] = events
    assert_user_actor(event, engineer)
    assert event.action == "prompt.version.create"
    assert (event.object_type, event.object_id, event.object_label) == (
        "prompt",
        str(prompt.pk),
        "answer@2",
    )
    assert event.application_id == application.pk
    assert event.before == v1.content
    assert event.after == result.version.content
    assert event.after["user"] == "Q: {{ question }}"
    assert event.reason == "shorter"


def test_saving_identical_content_writes_no_event(prompt, engineer):
    with new_events() as events:
        result = services.save_head_version(
            actor=engineer, head=prompt, content=dict(PROMPT_CONTENT), base_number=1
        )
    assert result.created is False
    assert events == []


def test_bind_version_writes_one_event_per_rebind(prompt, engineer, application):
    dev = env(application, "dev")
    v1 = prompt.versions.get(number=1)
    v2 = services.save_head_version(
        actor=engineer, head=prompt, content=edited_prompt(user="v2 {{ question }}"), base_number=1
    ).version

    with new_events() as first:
        services.bind_version(actor=engineer, environment=dev, version=v1, reason="go live")
    [event] = first
    assert_user_actor(event, engineer)
    assert event.action == "prompt.bind"
    assert event.object_label == "answer@1 → dev"
    assert (event.object_type, event.object_id) == ("prompt", str(prompt.pk))
    assert (event.application_id, event.environment_id) == (application.pk, dev.pk)
    assert (event.before, event.after, event.reason) == (None, {"version": 1}, "go live")

    with new_events() as second:
        services.bind_version(actor=engineer, environment=dev, version=v2)
    [event] = second
    assert event.object_label == "answer@2 → dev"
    assert (event.before, event.after) == ({"version": 1}, {"version": 2})

    with new_events() as again:
        services.bind_version(actor=engineer, environment=dev, version=v2)
    assert again == [], "binding the version already live is not a change"


def test_refused_bind_to_protected_environment_writes_no_event(prompt, engineer, application):
    with new_events() as events, pytest.raises(services.PromotionRequired):
        services.bind_version(
            actor=engineer, environment=env(application, "prod"), version=prompt.versions.get()
        )
    assert events == []


def test_grant_role_writes_grant_then_change_events(application):
    admin = make_user("boss")
    dana = make_user("dana")
    with new_events() as granted:
        membership = grant_role(actor=admin, user=dana, application=application, role=Role.VIEWER)
    [event] = granted
    assert_user_actor(event, admin)
    assert event.action == "membership.grant"
    assert (event.object_type, event.object_id) == ("membership", str(membership.pk))
    assert event.object_label == f"dana in {application.key}"
    assert event.application_id == application.pk
    assert (event.before, event.after) == (None, {"user": "dana", "role": "viewer"})

    with new_events() as changed:
        grant_role(actor=admin, user=dana, application=application, role=Role.ENGINEER)
    [event] = changed
    assert event.action == "membership.change"
    assert (event.before, event.after) == ({"role": "viewer"}, {"user": "dana", "role": "engineer"})

    with new_events() as same:
        grant_role(actor=admin, user=dana, application=application, role=Role.ENGINEER)
    assert same == []


def test_system_actor_is_recorded_as_system(application):
    with new_events() as events:
        grant_role(actor=SYSTEM, user=make_user("sam"), application=application, role="viewer")
    [event] = events
    assert (event.actor_type, event.actor_id, event.actor_label) == (
        ActorType.SYSTEM,
        None,
        "system",
    )


def test_environment_policy_change_and_revoke_write_one_event_each(application, member):
    admin = member(Role.ADMIN, "admin1")
    staging = env(application, "staging")
    with new_events() as policy:
        services.update_environment_policy(
            actor=admin, environment=staging, protected=True, required_approvals=2,
            eval_gate_required=False,
        )  # fmt: skip
    [event] = policy
    assert event.action == "environment.policy.change"
    assert event.object_label == f"{application.key}/staging"
    assert event.environment_id == staging.pk
    assert event.before == {
        "protected": False,
        "required_approvals": 0,
        "eval_gate_required": False,
    }
    assert event.after == {"protected": True, "required_approvals": 2, "eval_gate_required": False}

    viewer = member(Role.VIEWER, "leaver")
    membership = Membership.objects.get(user=viewer, application=application)
    with new_events() as revoked:
        revoke_membership(actor=admin, membership=membership)
    [event] = revoked
    assert event.action == "membership.revoke"
    assert event.before == {"user": "leaver", "role": "viewer"} and event.after is None


def test_request_id_and_ip_are_stamped_from_the_request_context(application, engineer):
    ctx = context.RequestContext(request_id="req-1234abcd", ip="203.0.113.9")
    with context.bound(ctx), new_events() as events:
        grant_role(actor=engineer, user=make_user("x1"), application=application, role="viewer")
    [event] = events
    assert (event.request_id, event.ip) == ("req-1234abcd", "203.0.113.9")
    assert verify_chain().ok


def test_non_canonical_ipv6_address_still_verifies(application, engineer):
    ctx = context.RequestContext(request_id="req-ipv6abcd", ip="2001:DB8:0::1")
    with context.bound(ctx):
        grant_role(actor=engineer, user=make_user("x2"), application=application, role="viewer")
    assert verify_chain().ok


def test_record_outside_a_transaction_is_refused(transactional_db):
    with new_events() as events, pytest.raises(RuntimeError, match="inside the transaction"):
        audit.record(actor=SYSTEM, action="x.y", object_type="t", object_id=1, object_label="t")
    assert events == []


# --- a rolled-back change leaves no event ------------------------------------------------------


class Boom(Exception):
    pass


def _save(ctx):
    services.save_head_version(
        actor=ctx.engineer, head=ctx.prompt, content=edited_prompt(user="x {{ question }}"),
        base_number=1,
    )  # fmt: skip


def _bind(ctx):
    services.bind_version(
        actor=ctx.engineer, environment=env(ctx.app, "dev"), version=ctx.prompt.versions.get()
    )


def _create_head(ctx):
    services.create_head(
        actor=ctx.engineer, kind=PROMPT, application=ctx.app, key="other", name="Other",
        content=PROMPT_CONTENT,
    )  # fmt: skip


def _grant(ctx):
    grant_role(actor=ctx.engineer, user=make_user("rolledback"), application=ctx.app, role="viewer")


def _create_app(ctx):
    services.create_application(actor=ctx.engineer, key="ghost", name="Ghost")


def _policy(ctx):
    services.update_environment_policy(
        actor=ctx.engineer, environment=env(ctx.app, "dev"), protected=True, required_approvals=1,
        eval_gate_required=True,
    )  # fmt: skip


CHANGES = {
    "save_head_version": (_save, lambda c: c.prompt.versions.count() == 1),
    "bind_version": (_bind, lambda c: not PromptBinding.objects.exists()),
    "create_head": (_create_head, lambda c: not Prompt.objects.filter(key="other").exists()),
    "grant_role": (
        _grant,
        lambda c: not Membership.objects.filter(user__username="rolledback").exists(),
    ),
    "create_application": (
        _create_app,
        lambda c: not Application.objects.filter(key="ghost").exists(),
    ),
    "update_environment_policy": (_policy, lambda c: not env(c.app, "dev").protected),
}


@pytest.mark.parametrize("name", CHANGES)
def test_rolled_back_change_leaves_no_event(transactional_db, application, engineer, name):
    change, undone = CHANGES[name]
    ctx = SimpleNamespace(
        app=application, engineer=engineer, prompt=make_prompt(application, engineer)
    )
    start = last_seq()
    with pytest.raises(Boom), transaction.atomic():
        change(ctx)
        assert last_seq() == start + 1, "the service records its event inside the transaction"
        raise Boom
    assert last_seq() == start
    assert undone(ctx), "the change itself was rolled back too"
    # the chain carries on from the last committed event, without a gap
    with new_events() as events:
        grant_role(actor=engineer, user=make_user("after"), application=application, role="viewer")
    [event] = events
    assert event.seq == start + 1
    assert event.prev_hash == AuditEvent.objects.get(seq=start).hash
    assert verify_chain().ok


# --- the chain ----------------------------------------------------------------------------------


def test_events_form_a_contiguous_hash_chain_from_seq_1(application, engineer, prompt):
    dev = env(application, "dev")
    v2 = services.save_head_version(
        actor=engineer, head=prompt, content=edited_prompt(user="v2 {{ question }}"), base_number=1
    ).version
    services.bind_version(actor=engineer, environment=dev, version=v2)
    services.create_head(
        actor=engineer, kind=MODEL_CONFIG, application=application, key="main", name="Main",
        content=MODEL_CONTENT,
    )  # fmt: skip
    grant_role(actor=engineer, user=make_user("late"), application=application, role="curator")

    events = chain()  # read back from the database
    assert [e.action for e in events] == [
        "application.create", "membership.grant", "prompt.create", "prompt.version.create",
        "prompt.bind", "model_config.create", "membership.grant",
    ]  # fmt: skip
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].prev_hash == GENESIS_HASH
    for previous, event in itertools.pairwise(events):
        assert event.prev_hash == previous.hash, f"seq {event.seq} does not link to its predecessor"
    key_id, key = signing_key()
    for event in events:
        assert event.key_id == key_id
        assert event.hash == event_hash(event.prev_hash, event.chained_fields(), key)
    assert len({e.hash for e in events}) == len(events)
    result = verify_chain(chunk_size=3)  # crosses several fetch chunks
    assert result.ok and result.count == len(events)


def test_hash_covers_every_chained_field(application):
    event = chain()[-1]
    fields = event.chained_fields()
    _, key = signing_key()
    assert set(fields) == {
        "seq", "at", "actor_type", "actor_id", "actor_label", "action", "object_type",
        "object_id", "object_label", "application_id", "environment_id", "before", "after",
        "reason", "request_id", "ip",
    }  # fmt: skip
    for name in fields:
        changed = dict(fields, **{name: "tampered" if fields[name] != "tampered" else "x"})
        assert event_hash(event.prev_hash, changed, key) != event.hash, name
    assert event_hash("f" * 64, fields, key) != event.hash, "prev_hash is covered too"
    assert event_hash(event.prev_hash, fields, key) == event.hash


def test_concurrent_writers_keep_one_gapless_chain(postgres_tx):
    n_writers = 8
    from tests.factories import make_application

    application = make_application("busy")
    start = last_seq()
    barrier = threading.Barrier(n_writers)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            barrier.wait()
            with transaction.atomic():
                audit.record(
                    actor=Actor(ActorType.API_KEY, i, f"key-{i}"), action="flag.toggle",
                    object_type="flag", object_id=i, object_label=f"flag-{i}",
                    application=application, after={"on": True},
                )  # fmt: skip
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n_writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert last_seq() == start + n_writers
    assert sorted(
        AuditEvent.objects.filter(action="flag.toggle").values_list("object_label", flat=True)
    ) == sorted(f"flag-{i}" for i in range(n_writers))
    assert verify_chain().ok


# --- append-only ------------------------------------------------------------------------------


def test_orm_refuses_to_update_or_delete_events(application):
    event = chain()[-1]
    original = (event.reason, event.hash)
    event.reason = "rewritten"
    with pytest.raises(ImmutableVersionError):
        event.save()
    with pytest.raises(ImmutableVersionError):
        event.delete()
    with pytest.raises(ImmutableVersionError):
        AuditEvent.objects.filter(seq=event.seq).update(reason="x")
    with pytest.raises(ImmutableVersionError):
        AuditEvent.objects.filter(seq=event.seq).delete()
    with pytest.raises(ImmutableVersionError):
        AuditEvent.objects.all().delete()
    with pytest.raises(ImmutableVersionError):
        AuditEvent.objects.bulk_update([event], ["reason"])
    stored = AuditEvent.objects.get(seq=event.seq)
    assert (stored.reason, stored.hash) == original
    assert verify_chain().ok


def _forged(existing: AuditEvent) -> AuditEvent:
    return AuditEvent(
        seq=existing.seq, at=existing.at, actor_type=ActorType.SYSTEM, actor_label="mallory",
        action="application.create", object_type="application", object_id="1",
        object_label="forged", prev_hash=existing.prev_hash, hash="f" * 64,
    )  # fmt: skip


def _save_fresh_instance(forged):
    forged.save()


def _upsert(forged):
    AuditEvent.objects.bulk_create(
        [forged], update_conflicts=True, unique_fields=["seq"],
        update_fields=["actor_label", "object_label", "hash"],
    )  # fmt: skip


@pytest.mark.parametrize("overwrite", [_save_fresh_instance, _upsert], ids=["save", "upsert"])
def test_orm_refuses_to_overwrite_an_event_through_a_new_instance(application, overwrite):
    existing = chain()[-1]
    # Refused either by the queryset guard or, for a plain save, by the database's unique
    # seq (save is always an INSERT): what matters is that nothing is overwritten.
    with pytest.raises((ImmutableVersionError, IntegrityError)), transaction.atomic():
        overwrite(_forged(existing))
    assert AuditEvent.objects.get(seq=existing.seq).hash == existing.hash


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_auditevent SET reason = 'rewritten' WHERE seq = %s",
        "DELETE FROM audit_auditevent WHERE seq = %s",
    ],
    ids=["update", "delete"],
)
def test_postgres_trigger_refuses_raw_update_and_delete(postgres, application, statement):
    event = chain()[-1]
    with (
        pytest.raises(DatabaseError, match="immutable"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement, [event.seq])
    stored = AuditEvent.objects.get(seq=event.seq)
    assert (stored.reason, stored.hash) == (event.reason, event.hash)
    assert verify_chain().ok
