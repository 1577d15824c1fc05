"""Flag, variant and shadow as rollup dimensions (and the sum of squared costs, for the
experiments' intervals): the unique keys of the hourly and daily rollups are rebuilt over them."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('usage', '0008_event_dimensions'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='usagedaily',
            name='usagedaily_unique',
        ),
        migrations.RemoveConstraint(
            model_name='usagehourly',
            name='usagehourly_unique',
        ),
        migrations.AddField(
            model_name='usagedaily',
            name='cost_squares',
            field=models.FloatField(default=0),
        ),
        migrations.AddField(
            model_name='usagedaily',
            name='flag',
            field=models.CharField(blank=True, max_length=80),
        ),
        migrations.AddField(
            model_name='usagedaily',
            name='shadow',
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name='usagedaily',
            name='variant',
            field=models.CharField(blank=True, max_length=120),
        ),
        migrations.AddField(
            model_name='usagehourly',
            name='cost_squares',
            field=models.FloatField(default=0),
        ),
        migrations.AddField(
            model_name='usagehourly',
            name='flag',
            field=models.CharField(blank=True, max_length=80),
        ),
        migrations.AddField(
            model_name='usagehourly',
            name='shadow',
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name='usagehourly',
            name='variant',
            field=models.CharField(blank=True, max_length=120),
        ),
        migrations.AddConstraint(
            model_name='usagedaily',
            constraint=models.UniqueConstraint(fields=('application', 'environment', 'day', 'model', 'prompt_version', 'feature', 'flag', 'variant', 'shadow', 'source'), name='usagedaily_unique'),
        ),
        migrations.AddConstraint(
            model_name='usagehourly',
            constraint=models.UniqueConstraint(fields=('application', 'environment', 'hour', 'model', 'prompt_version', 'feature', 'flag', 'variant', 'shadow', 'source'), name='usagehourly_unique'),
        ),
    ]
