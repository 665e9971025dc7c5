"""/metrics counts the settled workflow steps from a tally (orders/tally.py). Existing steps start
not tallied: the first scrapes fold them, 50,000 a scrape (the partial index finds them)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('orders', '0007_cancel_failed_orders'),
    ]

    operations = [
        migrations.CreateModel(
            name='StepTally',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=50)),
                ('state', models.CharField(max_length=16)),
                ('settled', models.BigIntegerField(default=0)),
            ],
        ),
        migrations.AddField(
            model_name='workflowstep',
            name='tallied',
            field=models.BooleanField(default=False),
        ),
        migrations.AddIndex(
            model_name='workflowstep',
            index=models.Index(condition=models.Q(models.Q(('state', 'PENDING'), _negated=True), ('tallied', False)), fields=['id'], name='workflowstep_untallied'),
        ),
        migrations.AddConstraint(
            model_name='steptally',
            constraint=models.UniqueConstraint(fields=('name', 'state'), name='steptally_one_per_outcome'),
        ),
    ]
