#!/usr/bin/python3
"""Django's command-line utility for the pgsite test project (migrate,
createsuperuser, seed_notes)."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pgsite.settings")
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
