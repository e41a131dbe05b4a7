"""The WSGI entry point: gangway pgsite.wsgi:application (cwd tests/apps/pgsite)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pgsite.settings")
application = get_wsgi_application()
