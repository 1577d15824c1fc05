from django.db import migrations

from console.core.dbtriggers import forbid_update_delete


class Migration(migrations.Migration):
    dependencies = [("registry", "0001_initial")]

    operations = [
        forbid_update_delete("registry_promptversion"),
        forbid_update_delete("registry_modelconfigversion"),
    ]
