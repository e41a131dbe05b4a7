"""A one-file Django site over --https: is_secure(), absolute URIs and
SECURE_SSL_REDIRECT see the scheme gangway gives (tests/test_tls.py)."""
import django
from django.conf import settings
from django.http import JsonResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["localhost", "127.0.0.1"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="gangway-tls-test-not-secret",
    SECURE_SSL_REDIRECT=True,
    MIDDLEWARE=["django.middleware.security.SecurityMiddleware"],
)
django.setup()


def where(request):
    return JsonResponse({"secure": request.is_secure(), "scheme": request.scheme,
                         "uri": request.build_absolute_uri()})


urlpatterns = [path("where", where)]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
