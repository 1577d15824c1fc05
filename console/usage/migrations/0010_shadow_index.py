"""The shadow calls' index on the usage events, built concurrently on PostgreSQL so the runtime
API's writes go on while it builds (see console.core.migration_ops). A concurrent build that
fails part way (a lost connection, say) leaves an invalid index behind: drop it with
`DROP INDEX CONCURRENTLY usage_shadow_at;` and migrate again."""

from django.db import migrations, models

from console.core.migration_ops import AddIndexConcurrently


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('usage', '0009_rollup_dimensions'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='usageevent',
            index=models.Index(condition=models.Q(('shadow_of', ''), _negated=True), fields=['application', 'environment', 'at'], name='usage_shadow_at'),
        ),
    ]
