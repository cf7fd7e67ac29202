from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('backups', '0008_record_state_choices'),
    ]

    operations = [
        migrations.AddField(
            model_name='backuprecord',
            name='locked_until',
            field=models.DateTimeField(blank=True, help_text='S3 Object Lock retain-until date of the object and its manifest (AWS_S3_OBJECT_LOCK_MODE): nobody, retention included, can delete them before; extended while retention keeps them.', null=True, verbose_name='locked until'),
        ),
    ]
