"""Which flag chose an event's variant, and which live call a shadow call ran beside.

Only the event table here, in a transaction of its own: adding a column with a constant default
is a catalogue change on PostgreSQL, so the lock on the table the runtime API writes to is held
for moments (the rollup tables' changes follow in 0009, the index in 0010)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('registry', '0002_immutable_versions'),
        ('usage', '0007_usage_fallback_from'),
    ]

    operations = [
        migrations.AddField(
            model_name='usageevent',
            name='flag',
            field=models.CharField(blank=True, max_length=80),
        ),
        migrations.AddField(
            model_name='usageevent',
            name='shadow_of',
            field=models.CharField(blank=True, max_length=100),
        ),
    ]
