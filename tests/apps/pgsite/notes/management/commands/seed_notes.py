"""manage.py seed_notes N [--prefix P]: N notes titled P-0001 ... in one
transaction (existing titles are left alone), so that the index page has rows
to read."""
from django.core.management.base import BaseCommand
from django.db import transaction

from notes.models import Note


class Command(BaseCommand):
    help = "Create N notes (titles PREFIX-0001 ...) unless they exist."

    def add_arguments(self, parser):
        parser.add_argument("count", type=int)
        parser.add_argument("--prefix", default="seed")

    def handle(self, count, prefix, **options):
        with transaction.atomic():
            have = set(Note.objects.filter(title__startswith=prefix + "-")
                       .values_list("title", flat=True))
            new = [Note(title="%s-%04d" % (prefix, i), body="Seeded note %d." % i)
                   for i in range(1, count + 1) if "%s-%04d" % (prefix, i) not in have]
            Note.objects.bulk_create(new)
        self.stdout.write("%d notes created" % len(new))
