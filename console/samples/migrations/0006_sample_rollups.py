"""Hourly sample rollups for the monitors (console.samples.rollups): SampleHourly, its watermark
and the stale-hour marks the judge leaves. Plain tables on every database; the watermark starts
at 0, so monitors read the raw samples until the first pass has folded them."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('registry', '0002_immutable_versions'),
        ('samples', '0005_shadow_answer'),
    ]

    operations = [
        migrations.CreateModel(
            name='SampleRollupState',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('last_sample_id', models.BigIntegerField(default=0)),
                ('revision', models.PositiveBigIntegerField(default=0)),
                ('updated_at', models.DateTimeField(default=django.utils.timezone.now)),
            ],
        ),
        migrations.CreateModel(
            name='SampleHourly',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('hour', models.DateTimeField()),
                ('prompt_version', models.CharField(blank=True, max_length=120)),
                ('samples', models.PositiveIntegerField(default=0)),
                ('judged', models.PositiveIntegerField(default=0)),
                ('faithfulness_n', models.PositiveIntegerField(default=0)),
                ('faithfulness_sum', models.FloatField(default=0)),
                ('relevance_n', models.PositiveIntegerField(default=0)),
                ('relevance_sum', models.FloatField(default=0)),
                ('hallucinated', models.PositiveIntegerField(default=0)),
                ('refused', models.PositiveIntegerField(default=0)),
                ('rated', models.PositiveIntegerField(default=0)),
                ('thumbs_down', models.PositiveIntegerField(default=0)),
                ('input_bins', models.JSONField(default=list)),
                ('application', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='registry.application')),
                ('environment', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='registry.environment')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('application', 'environment', 'hour', 'prompt_version'), name='samplehourly_once')],
            },
        ),
        migrations.CreateModel(
            name='StaleSampleHour',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('hour', models.DateTimeField()),
                ('application', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='registry.application')),
                ('environment', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='registry.environment')),
            ],
            options={
                'indexes': [models.Index(fields=['application', 'environment', 'hour'], name='stalesamplehour_app_env')],
            },
        ),
    ]
