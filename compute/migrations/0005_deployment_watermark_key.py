"""The deployment's watermark secret (compute.engines.watermark), one per row."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

import compute.models


def distinct_keys(apps: Any, schema_editor: Any) -> None:
    """AddField gives every existing row the same default: each gets its own secret."""
    Deployment = apps.get_model("compute", "Deployment")
    for dep in Deployment.objects.only("pk"):
        dep.watermark_key = compute.models.watermark_secret()
        dep.save(update_fields=["watermark_key"])


class Migration(migrations.Migration):
    dependencies = [
        ("compute", "0004_workloads_and_adapters"),
    ]

    operations = [
        migrations.AddField(
            model_name="deployment",
            name="watermark_key",
            field=models.CharField(
                default=compute.models.watermark_secret, editable=False, max_length=64
            ),
        ),
        migrations.RunPython(distinct_keys, migrations.RunPython.noop),
    ]
