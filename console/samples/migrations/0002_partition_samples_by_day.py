"""On PostgreSQL, make samples_sample a table partitioned by range on `at` (one partition per
UTC day, made by console.samples.partitions): retention then drops whole days instead of
deleting rows. The columns are 0001's; the primary key and the unique constraint gain `at`, as
PostgreSQL requires of a partitioned table, and the indexes keep 0001's names. Other databases
keep 0001's plain table."""

from django.db import migrations

TO_PARTITIONED = """
ALTER TABLE samples_sample RENAME TO samples_sample_flat;
CREATE TABLE samples_sample
    (LIKE samples_sample_flat INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS)
    PARTITION BY RANGE ("at");
DROP TABLE samples_sample_flat;
ALTER TABLE samples_sample ADD CONSTRAINT samples_sample_pkey PRIMARY KEY (id, "at");
ALTER TABLE samples_sample ADD CONSTRAINT sample_unique_id
    UNIQUE (application_id, environment_id, sample_id, "at");
ALTER TABLE samples_sample ADD CONSTRAINT samples_sample_application_fk
    FOREIGN KEY (application_id) REFERENCES registry_application (id)
    DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE samples_sample ADD CONSTRAINT samples_sample_environment_fk
    FOREIGN KEY (environment_id) REFERENCES registry_environment (id)
    DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX sample_app_env_at ON samples_sample (application_id, environment_id, "at");
CREATE INDEX sample_pending_at ON samples_sample ("at") WHERE judge_state = 'pending';
"""


def partition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TO_PARTITIONED)


class Migration(migrations.Migration):
    dependencies = [("samples", "0001_initial")]

    # Going back to 0001 leaves the partitioned table (0001's own reversal drops it).
    operations = [migrations.RunPython(partition, migrations.RunPython.noop)]
