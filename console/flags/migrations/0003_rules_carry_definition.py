"""Each flag rule set's newest version gets a copy of the flag definition it serves, so a
protected environment keeps serving what it was promoted with when the flag is edited.

Versions are immutable: this adds the next version of each rule set (same rules, the
definition added) rather than touching a stored one. What every environment serves is unchanged.
"""

from django.db import migrations
from django.utils import timezone

from console.core.canonical import content_hash, normalise

SYSTEM_USERNAME = "airlock-system"


def carry_definition(apps, schema_editor):
    FlagRules = apps.get_model("flags", "FlagRules")
    FlagRulesVersion = apps.get_model("flags", "FlagRulesVersion")
    User = apps.get_model("auth", "User")
    heads = FlagRules.objects.select_related("flag").filter(latest_number__gt=0)
    if not heads.exists():
        return
    system, _ = User.objects.get_or_create(
        username=SYSTEM_USERNAME, defaults={"is_active": False, "password": "!"}
    )
    for head in heads.iterator():
        latest = FlagRulesVersion.objects.get(head=head, number=head.latest_number)
        if "definition" in latest.content:
            continue
        flag = head.flag
        content = normalise(
            {
                **latest.content,
                "definition": {
                    "kind": flag.kind,
                    "variants": flag.variants,
                    "off_variant": flag.off_variant,
                },
            }
        )
        FlagRulesVersion.objects.create(
            head=head,
            number=latest.number + 1,
            content=content,
            content_hash=content_hash(content),
            parent=latest,
            author=system,
            message="The served flag definition is kept with the rules",
            created_at=timezone.now(),
        )
        FlagRules.objects.filter(pk=head.pk).update(latest_number=latest.number + 1)


class Migration(migrations.Migration):
    dependencies = [("flags", "0002_immutable_versions"), ("auth", "0012_alter_user_first_name_max_length")]

    operations = [migrations.RunPython(carry_definition, migrations.RunPython.noop)]
