"""Three callables; which one answers shows which one gangway picked (tests/test_cli.py)."""


def _reply(text):
    def wsgi(environ, start_response):
        body = text.encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return wsgi


application = _reply("callable: application")
app = _reply("callable: app")
serve_it = _reply("callable: serve_it")
