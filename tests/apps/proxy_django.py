"""A one-file Django site for tests/test_haproxy.py: what request.is_secure(),
build_absolute_uri() and get_host() say behind a TLS-terminating proxy.
GET /health answers "ok" for the balancer's checks."""
import json

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="gangway-tests-only",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


def health(request):
    return HttpResponse(b"ok")


def whoami(request):
    return HttpResponse(json.dumps({
        "is_secure": request.is_secure(),
        "absolute": request.build_absolute_uri("/next?x=1"),
        "host": request.get_host(),
        "remote_addr": request.META.get("REMOTE_ADDR"),
        "remote_port": request.META.get("REMOTE_PORT"),
        "peer": request.META.get("gangway.peer_addr"),
    }), content_type="application/json")


urlpatterns = [path("health", health), path("whoami", whoami)]
application = get_wsgi_application()
