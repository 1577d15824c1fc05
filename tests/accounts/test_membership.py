"""Granting, changing and revoking roles: the service, `manage.py grant_role`, the members page
and the home page's list of the user's applications."""

from __future__ import annotations

import contextlib
import threading
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse
from guardian.shortcuts import get_perms

from console.accounts.models import ApplicationUserObjectPermission, Membership
from console.accounts.roles import ROLE_PERMISSIONS, Role
from console.accounts.services import grant_role, revoke_membership
from console.audit.models import ActorType, AuditEvent
from console.audit.services import SYSTEM
from tests.factories import make_application

pytestmark = pytest.mark.django_db


def quick_user(username: str):
    """A user without a usable password (force_login only): no slow password hashing."""
    return get_user_model().objects.create_user(username=username)


def fresh(user):
    """Reload the user so no permission cache from an earlier check can answer for it."""
    return get_user_model().objects.get(pk=user.pk)


def perms_of(user, application) -> set[str]:
    return set(get_perms(fresh(user), application))


def perm_rows(user, application) -> set[str]:
    """The guardian rows themselves, not a cached view of them."""
    return set(
        ApplicationUserObjectPermission.objects.filter(
            user=user, content_object=application
        ).values_list("permission__codename", flat=True)
    )


def last_seq() -> int:
    return AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def events_since(seq: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(seq__gt=seq).order_by("seq"))


def add(application, role: str, username: str):
    user = quick_user(username)
    grant_role(actor=SYSTEM, user=user, application=application, role=role)
    return user


# ---------------------------------------------------------------------------------------------
# grant_role / revoke_membership
# ---------------------------------------------------------------------------------------------


class TestGrantRole:
    def test_first_grant_creates_membership_perms_and_audit_event(self, application):
        actor = add(application, Role.ADMIN, "boss")
        alice = quick_user("alice")
        seq = last_seq()

        membership = grant_role(
            actor=actor, user=alice, application=application, role=Role.ENGINEER
        )

        assert Membership.objects.get(user=alice, application=application).role == Role.ENGINEER
        assert membership.role == Role.ENGINEER
        assert perm_rows(alice, application) == set(ROLE_PERMISSIONS[Role.ENGINEER])
        assert perms_of(alice, application) == set(ROLE_PERMISSIONS[Role.ENGINEER])
        [event] = events_since(seq)
        assert event.action == "membership.grant"
        assert event.before is None
        assert event.after == {"user": "alice", "role": "engineer"}
        assert event.application_id == application.pk
        assert event.object_type == "membership"
        assert event.object_id == str(membership.pk)
        assert event.object_label == f"alice in {application.key}"
        assert (event.actor_type, event.actor_id, event.actor_label) == (
            ActorType.USER,
            actor.pk,
            "boss",
        )

    def test_replacing_a_role_replaces_the_guardian_perms(self, application):
        bob = add(application, Role.ENGINEER, "bob")
        assert perm_rows(bob, application) == {
            "view_application",
            "curate_application",
            "engineer_application",
        }
        seq = last_seq()

        grant_role(actor=SYSTEM, user=bob, application=application, role=Role.APPROVER)

        assert Membership.objects.filter(user=bob, application=application).count() == 1
        assert Membership.objects.get(user=bob, application=application).role == Role.APPROVER
        assert perm_rows(bob, application) == {"view_application", "approve_application"}
        assert perms_of(bob, application) == set(ROLE_PERMISSIONS[Role.APPROVER])
        assert not fresh(bob).has_perm("registry.engineer_application", application)
        assert fresh(bob).has_perm("registry.approve_application", application)
        [event] = events_since(seq)
        assert event.action == "membership.change"
        assert event.before == {"role": "engineer"}
        assert event.after == {"user": "bob", "role": "approver"}
        assert (event.actor_type, event.actor_label) == (ActorType.SYSTEM, "system")

    @pytest.mark.parametrize("role", Role.values)
    def test_each_role_gets_exactly_its_permissions(self, application, role):
        user = add(application, Role.ADMIN, "was-admin")
        add(application, Role.ADMIN, "keeps-admin")  # so demoting was-admin is legitimate
        grant_role(actor=SYSTEM, user=user, application=application, role=role)
        assert perm_rows(user, application) == set(ROLE_PERMISSIONS[role])

    def test_regranting_the_same_role_writes_nothing(self, application):
        carol = add(application, Role.VIEWER, "carol")
        seq = last_seq()
        grant_role(actor=SYSTEM, user=carol, application=application, role=Role.VIEWER)
        assert events_since(seq) == []
        assert perm_rows(carol, application) == {"view_application"}

    def test_roles_are_per_application(self, application):
        other = make_application("elsewhere")
        dave = add(application, Role.ADMIN, "dave")
        assert perm_rows(dave, other) == set()
        assert perms_of(dave, other) == set()
        grant_role(actor=SYSTEM, user=dave, application=other, role=Role.VIEWER)
        assert perm_rows(dave, application) == set(ROLE_PERMISSIONS[Role.ADMIN])
        assert perm_rows(dave, other) == {"view_application"}

    def test_unknown_role_is_refused_with_a_clear_error(self, application):
        erin = quick_user("erin")
        seq = last_seq()
        with pytest.raises(ValidationError) as caught:
            grant_role(actor=SYSTEM, user=erin, application=application, role="superhero")
        assert "role" in caught.value.message_dict
        [message] = caught.value.message_dict["role"]
        assert "'superhero'" in message
        for role in Role.values:
            assert role in message
        assert not Membership.objects.filter(user=erin).exists()
        assert perm_rows(erin, application) == set()
        assert events_since(seq) == []

    def test_unknown_role_does_not_touch_an_existing_membership(self, application):
        frank = add(application, Role.ENGINEER, "frank")
        with pytest.raises(ValidationError):
            grant_role(actor=SYSTEM, user=frank, application=application, role="Admin")
        assert Membership.objects.get(user=frank).role == Role.ENGINEER
        assert perm_rows(frank, application) == set(ROLE_PERMISSIONS[Role.ENGINEER])

    def test_demoting_the_last_admin_is_refused(self, application):
        gina = add(application, Role.ADMIN, "gina")
        seq = last_seq()
        with pytest.raises(ValidationError, match="at least one admin"):
            grant_role(actor=SYSTEM, user=gina, application=application, role=Role.VIEWER)
        assert Membership.objects.get(user=gina).role == Role.ADMIN
        assert perm_rows(gina, application) == set(ROLE_PERMISSIONS[Role.ADMIN])
        assert events_since(seq) == []

    def test_demoting_one_of_two_admins_is_allowed(self, application):
        add(application, Role.ADMIN, "hana")
        ivan = add(application, Role.ADMIN, "ivan")
        grant_role(actor=SYSTEM, user=ivan, application=application, role=Role.VIEWER)
        assert Membership.objects.get(user=ivan).role == Role.VIEWER
        assert perm_rows(ivan, application) == {"view_application"}


class TestRevoke:
    def test_revoke_removes_membership_and_perms_and_is_audited(self, application):
        boss = add(application, Role.ADMIN, "boss")
        jack = add(application, Role.CURATOR, "jack")
        membership = Membership.objects.get(user=jack)
        membership_pk = membership.pk
        seq = last_seq()

        revoke_membership(actor=boss, membership=membership)

        assert not Membership.objects.filter(user=jack, application=application).exists()
        assert perm_rows(jack, application) == set()
        assert perms_of(jack, application) == set()
        [event] = events_since(seq)
        assert event.action == "membership.revoke"
        assert event.before == {"user": "jack", "role": "curator"}
        assert event.after is None
        assert event.object_id == str(membership_pk)
        assert event.application_id == application.pk
        assert event.actor_label == "boss"

    def test_revoking_the_last_admin_is_refused(self, application):
        kim = add(application, Role.ADMIN, "kim")
        add(application, Role.ENGINEER, "lee")
        seq = last_seq()
        with pytest.raises(ValidationError) as caught:
            revoke_membership(actor=kim, membership=Membership.objects.get(user=kim))
        assert caught.value.messages == ["An application must keep at least one admin."]
        assert Membership.objects.get(user=kim).role == Role.ADMIN
        assert perm_rows(kim, application) == set(ROLE_PERMISSIONS[Role.ADMIN])
        assert events_since(seq) == []

    def test_an_admin_of_another_application_does_not_count(self, application):
        other = make_application("elsewhere")
        mia = add(application, Role.ADMIN, "mia")
        add(other, Role.ADMIN, "ned")
        with pytest.raises(ValidationError):
            revoke_membership(actor=mia, membership=Membership.objects.get(user=mia))
        assert Membership.objects.filter(user=mia, application=application).exists()

    def test_revoking_one_of_two_admins_is_allowed(self, application):
        add(application, Role.ADMIN, "ola")
        pia = add(application, Role.ADMIN, "pia")
        revoke_membership(actor=SYSTEM, membership=Membership.objects.get(user=pia))
        assert not Membership.objects.filter(user=pia).exists()
        assert perm_rows(pia, application) == set()


@pytest.mark.django_db(transaction=True)
def test_concurrent_revokes_of_the_last_two_admins_keep_one(postgres_tx, monkeypatch):
    from console.accounts import services

    application = make_application("race")
    add(application, Role.ADMIN, "admin-1")
    add(application, Role.ADMIN, "admin-2")
    # Hold each revoke between its check and its delete until both have checked (or 3 s pass,
    # which is what happens when a correct implementation makes the second one wait).
    barrier = threading.Barrier(2, timeout=3)
    original = services._set_perms

    def set_perms_after_both_checked(user, app, role):
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        original(user, app, role)

    monkeypatch.setattr(services, "_set_perms", set_perms_after_both_checked)
    outcome: dict[str, str] = {}

    def revoke(username: str) -> None:
        try:
            membership = Membership.objects.select_related("user", "application").get(
                user__username=username, application=application
            )
            revoke_membership(actor=SYSTEM, membership=membership)
            outcome[username] = "revoked"
        except ValidationError:
            outcome[username] = "refused"
        finally:
            connection.close()

    threads = [threading.Thread(target=revoke, args=(n,)) for n in ("admin-1", "admin-2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcome.values()) == ["refused", "revoked"]
    assert Membership.objects.filter(application=application, role=Role.ADMIN).count() == 1


# ---------------------------------------------------------------------------------------------
# manage.py grant_role USER APP ROLE
# ---------------------------------------------------------------------------------------------


class TestGrantRoleCommand:
    def test_grants_the_role_and_says_so(self, application):
        quin = quick_user("quin")
        seq = last_seq()
        out = StringIO()

        call_command("grant_role", "quin", application.key, "approver", stdout=out)

        assert out.getvalue().strip() == f"quin is approver in {application.key}"
        assert Membership.objects.get(user=quin, application=application).role == Role.APPROVER
        assert perm_rows(quin, application) == set(ROLE_PERMISSIONS[Role.APPROVER])
        [event] = events_since(seq)
        assert event.action == "membership.grant"
        assert (event.actor_type, event.actor_id, event.actor_label) == (
            ActorType.SYSTEM,
            None,
            "system",
        )
        assert event.after == {"user": "quin", "role": "approver"}

    def test_replaces_an_existing_role(self, application):
        rex = add(application, Role.VIEWER, "rex")
        call_command("grant_role", "rex", application.key, "engineer", stdout=StringIO())
        assert Membership.objects.get(user=rex).role == Role.ENGINEER
        assert perm_rows(rex, application) == set(ROLE_PERMISSIONS[Role.ENGINEER])
        assert AuditEvent.objects.filter(action="membership.change").latest("seq").before == {
            "role": "viewer"
        }

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("ghost", "{app}", "viewer"), "user 'ghost' does not exist"),
            (("sam", "no-such-app", "viewer"), "application 'no-such-app' does not exist"),
            (("sam", "{app}", "overlord"), "Unknown role 'overlord'"),
        ],
        ids=["unknown-user", "unknown-app", "unknown-role"],
    )
    def test_refuses_unknown_names(self, application, args, message):
        sam = quick_user("sam")
        seq = last_seq()
        argv = [a.format(app=application.key) for a in args]
        with pytest.raises(CommandError) as caught:
            call_command("grant_role", *argv, stdout=StringIO())
        assert message in str(caught.value)
        assert caught.value.returncode != 0
        assert not Membership.objects.filter(user=sam).exists()
        assert events_since(seq) == []

    def test_missing_argument_is_an_error(self, application):
        with pytest.raises(CommandError, match="role"):
            call_command("grant_role", "someone", application.key)


# ---------------------------------------------------------------------------------------------
# The members page
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, application):
    admin = add(application, Role.ADMIN, "root")
    client.force_login(admin)
    return client


def members_url(application) -> str:
    return reverse("accounts:members", kwargs={"app": application.key})


def flashes(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


class TestMembersPage:
    def test_lists_only_this_applications_members(self, admin_client, application):
        other = make_application("elsewhere")
        add(application, Role.VIEWER, "in-a-viewer")
        add(application, Role.ENGINEER, "in-a-engineer")
        add(other, Role.ADMIN, "only-in-b")
        both = add(other, Role.ENGINEER, "in-both")
        grant_role(actor=SYSTEM, user=both, application=application, role=Role.CURATOR)

        response = admin_client.get(members_url(application))

        assert response.status_code == 200
        rows = [(m.user.username, m.role) for m in response.context["memberships"]]
        assert rows == [
            ("in-a-engineer", "engineer"),
            ("in-a-viewer", "viewer"),
            ("in-both", "curator"),
            ("root", "admin"),
        ]
        body = response.content.decode()
        assert "only-in-b" not in body
        assert body.count('name="membership"') == 4

    def test_admin_adds_a_member(self, admin_client, application):
        tom = quick_user("tom")
        seq = last_seq()
        response = admin_client.post(
            members_url(application), {"username": "tom", "role": "curator"}, follow=True
        )
        assert response.redirect_chain == [(members_url(application), 302)]
        assert Membership.objects.get(user=tom, application=application).role == Role.CURATOR
        assert perm_rows(tom, application) == set(ROLE_PERMISSIONS[Role.CURATOR])
        [event] = events_since(seq)
        assert (event.action, event.actor_label) == ("membership.grant", "root")
        assert event.after == {"user": "tom", "role": "curator"}
        assert flashes(response) == ["tom is now curator."]
        assert ("tom", "curator") in [
            (m.user.username, m.role) for m in response.context["memberships"]
        ]

    def test_admin_changes_a_role(self, admin_client, application):
        uma = add(application, Role.VIEWER, "uma")
        seq = last_seq()
        response = admin_client.post(
            members_url(application), {"username": "uma", "role": "engineer"}
        )
        assert response.status_code == 302
        assert Membership.objects.get(user=uma, application=application).role == Role.ENGINEER
        assert perm_rows(uma, application) == set(ROLE_PERMISSIONS[Role.ENGINEER])
        [event] = events_since(seq)
        assert event.action == "membership.change"
        assert event.before == {"role": "viewer"}
        assert event.after == {"user": "uma", "role": "engineer"}

    def test_admin_removes_a_member(self, admin_client, application):
        vic = add(application, Role.APPROVER, "vic")
        membership = Membership.objects.get(user=vic)
        seq = last_seq()
        response = admin_client.post(
            members_url(application),
            {"action": "revoke", "membership": str(membership.pk)},
            follow=True,
        )
        assert response.redirect_chain == [(members_url(application), 302)]
        assert not Membership.objects.filter(pk=membership.pk).exists()
        assert perm_rows(vic, application) == set()
        [event] = events_since(seq)
        assert (event.action, event.before) == (
            "membership.revoke",
            {"user": "vic", "role": "approver"},
        )
        assert flashes(response) == ["Removed vic."]

    def test_removing_the_last_admin_shows_an_error_and_keeps_them(self, admin_client, application):
        membership = Membership.objects.get(user__username="root")
        seq = last_seq()
        response = admin_client.post(
            members_url(application),
            {"action": "revoke", "membership": str(membership.pk)},
            follow=True,
        )
        assert response.status_code == 200
        assert flashes(response) == ["An application must keep at least one admin."]
        assert Membership.objects.get(pk=membership.pk).role == Role.ADMIN
        assert events_since(seq) == []

    def test_removing_an_unknown_membership_is_not_found(self, admin_client, application):
        response = admin_client.post(
            members_url(application), {"action": "revoke", "membership": "999999"}
        )
        assert response.status_code == 404

    def test_demoting_the_last_admin_shows_an_error_and_keeps_them(self, admin_client, application):
        seq = last_seq()
        response = admin_client.post(
            members_url(application), {"username": "root", "role": "viewer"}, follow=True
        )
        assert response.status_code == 200
        assert flashes(response) == ["An application must keep at least one admin."]
        assert Membership.objects.get(user__username="root").role == Role.ADMIN
        assert events_since(seq) == []

    @pytest.mark.parametrize("bad_id", ["abc", ""])
    def test_malformed_membership_id_is_not_found(self, admin_client, application, bad_id):
        admin_client.raise_request_exception = False
        response = admin_client.post(
            members_url(application), {"action": "revoke", "membership": bad_id}
        )
        assert response.status_code == 404
        assert Membership.objects.filter(application=application).count() == 1

    def test_unknown_user_is_a_form_error(self, admin_client, application):
        seq = last_seq()
        response = admin_client.post(
            members_url(application), {"username": "nobody", "role": "viewer"}
        )
        assert response.status_code == 200
        [error] = response.context["form"].errors["username"]
        # Not a dead end: it says how accounts are made, with what this project offers.
        assert error.startswith("No account named “nobody”. Airlock has no sign-up:")
        assert "/django-admin/auth/user/add/" in error
        assert "python manage.py createsuperuser" in error
        assert "then add them here" in error
        body = response.content.decode()
        assert "No account named “nobody”" in body and 'class="field has-error"' in body
        # An admin who is no operator gets no link to a page they cannot use.
        assert "Create the account “nobody”" not in body
        assert events_since(seq) == []
        assert Membership.objects.filter(application=application).count() == 1

    def test_an_operator_gets_a_link_to_create_the_account(self, client, application):
        operator = add(application, Role.ADMIN, "op")
        operator.is_staff = operator.is_superuser = True
        operator.save()
        client.force_login(operator)
        response = client.post(
            members_url(application), {"username": "new.person", "role": "viewer"}
        )
        assert response.status_code == 200
        link = reverse("admin:auth_user_add") + "?username=new.person"
        assert f'href="{link}"' in response.content.decode()
        assert "Create the account “new.person”" in response.content.decode()
        # The link's page exists and is prefilled.
        add_page = client.get(link)
        assert add_page.status_code == 200 and b'value="new.person"' in add_page.content

    def test_inactive_user_cannot_be_added(self, admin_client, application):
        ghost = quick_user("ghost")
        ghost.is_active = False
        ghost.save()
        response = admin_client.post(
            members_url(application), {"username": "ghost", "role": "viewer"}
        )
        assert response.status_code == 200
        [error] = response.context["form"].errors["username"]
        assert error.startswith("The account “ghost” is deactivated")
        assert "/django-admin/auth/user/" in error
        assert not Membership.objects.filter(user=ghost).exists()

    def test_unknown_role_is_a_form_error(self, admin_client, application):
        quick_user("wes")
        response = admin_client.post(
            members_url(application), {"username": "wes", "role": "overlord"}
        )
        assert response.status_code == 200
        assert "role" in response.context["form"].errors
        assert not Membership.objects.filter(user__username="wes").exists()

    @pytest.mark.parametrize("role", [r for r in Role.values if r != Role.ADMIN])
    def test_non_admin_members_are_forbidden(self, client, application, role):
        add(application, Role.ADMIN, "root")
        user = add(application, role, f"as-{role}")
        quick_user("target")
        client.force_login(user)
        assert client.get(members_url(application)).status_code == 403
        response = client.post(members_url(application), {"username": "target", "role": "admin"})
        assert response.status_code == 403
        assert not Membership.objects.filter(user__username="target").exists()
        assert Membership.objects.get(user=user).role == role


# ---------------------------------------------------------------------------------------------
# The home page lists the user's applications only, in a bounded number of queries
# ---------------------------------------------------------------------------------------------

# session, user, guardian content type (cached after first use), applications, environments.
HOME_MAX_QUERIES = 5


class TestHome:
    def test_lists_only_applications_the_user_belongs_to(self, client):
        mine = [make_application(f"mine-{i}") for i in range(3)]
        theirs = [make_application(f"theirs-{i}") for i in range(2)]
        user = quick_user("xena")
        for app, role in zip(mine, (Role.VIEWER, Role.ENGINEER, Role.ADMIN), strict=True):
            grant_role(actor=SYSTEM, user=user, application=app, role=role)
        stranger = quick_user("yuri")
        for app in theirs:
            grant_role(actor=SYSTEM, user=stranger, application=app, role=Role.ADMIN)
        client.force_login(user)

        response = client.get(reverse("registry:home"))

        assert response.status_code == 200
        assert sorted(a.key for a in response.context["applications"]) == [
            "mine-0",
            "mine-1",
            "mine-2",
        ]
        body = response.content.decode()
        for app in mine:
            assert reverse("registry:dashboard", kwargs={"app": app.key}) in body
        for app in theirs:
            assert app.key not in body
            assert app.name not in body

    def test_a_user_with_no_membership_sees_none(self, client):
        make_application("someone-elses")
        client.force_login(quick_user("zed"))
        response = client.get(reverse("registry:home"))
        assert response.status_code == 200
        assert response.context["applications"] == []
        assert "someone-elses" not in response.content.decode()
        assert "not a member of any application" in response.content.decode()

    def test_revoked_application_disappears(self, client, application):
        add(application, Role.ADMIN, "root")
        user = add(application, Role.VIEWER, "leaver")
        client.force_login(user)
        assert [a.pk for a in client.get("/").context["applications"]] == [application.pk]
        revoke_membership(actor=SYSTEM, membership=Membership.objects.get(user=user))
        assert client.get("/").context["applications"] == []

    @pytest.mark.parametrize("count", [1, 12])
    def test_query_count_does_not_grow_with_applications(
        self, client, django_assert_max_num_queries, count
    ):
        user = quick_user("busy")
        for i in range(count):
            app = make_application(f"busy-{i}")
            grant_role(actor=SYSTEM, user=user, application=app, role=Role.VIEWER)
        make_application("not-mine")
        client.force_login(user)

        with django_assert_max_num_queries(HOME_MAX_QUERIES):
            response = client.get(reverse("registry:home"))

        assert response.status_code == 200
        assert len(response.context["applications"]) == count
        # Environments come prefetched: three pills per application, no query per card.
        assert response.content.decode().count('class="pill') == 3 * count
