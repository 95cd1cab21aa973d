from django.db import migrations

from audits import triggers


def install(apps, schema_editor):
    triggers.install(schema_editor)


def remove(apps, schema_editor):
    triggers.remove(schema_editor)


def create_ledger_head(apps, schema_editor):
    apps.get_model("audits", "LedgerHead").objects.get_or_create(pk=1)


class Migration(migrations.Migration):
    dependencies = [("audits", "0001_initial")]

    operations = [
        migrations.RunPython(create_ledger_head, migrations.RunPython.noop),
        migrations.RunPython(install, remove),
    ]
