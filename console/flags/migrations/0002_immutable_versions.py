from django.db import migrations

from console.core.dbtriggers import forbid_update_delete


class Migration(migrations.Migration):
    dependencies = [("flags", "0001_initial")]

    operations = [forbid_update_delete("flags_flagrulesversion")]
