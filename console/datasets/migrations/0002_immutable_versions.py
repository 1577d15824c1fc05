from django.db import migrations

from console.core.dbtriggers import forbid_update_delete


class Migration(migrations.Migration):
    dependencies = [("datasets", "0001_initial")]

    operations = [
        forbid_update_delete("datasets_datasetversion"),
        forbid_update_delete("datasets_itemsnapshot"),
        forbid_update_delete("datasets_publisheditem"),
    ]
