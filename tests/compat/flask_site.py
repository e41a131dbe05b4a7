"""tests/apps/flask_app.py (the app test_flask.py drives) plus a few routes
for the differential tests of tests/test_uwsgi_compat.py: what the ini's
`env =` lines set, a redirect, cookies, a raw echo, the serving pid."""
import os

from flask import Response, jsonify, redirect, request

from flask_app import app  # tests/apps, found through the ini's pythonpath


@app.route("/compat/env")
def compat_env():
    # COMPAT_PORT (where the test told the ini to listen) differs per run
    return jsonify({k: v for k, v in os.environ.items()
                    if k.startswith("COMPAT_") and k != "COMPAT_PORT"})


@app.route("/compat/echo", methods=["POST", "PUT"])
def compat_echo():
    return Response(request.get_data(), status=201,
                    content_type=request.content_type or "application/octet-stream",
                    headers={"X-Echo-Length": str(request.content_length)})


@app.route("/compat/redirect")
def compat_redirect():
    return redirect("/user/redirected?lang=en", code=302)


@app.route("/compat/cookie")
def compat_cookie():
    r = jsonify(ok=True)
    r.set_cookie("session_id", "abc123", httponly=True, samesite="Lax")
    r.set_cookie("theme", "dark", max_age=3600, path="/")
    return r


@app.route("/compat/pid")
def compat_pid():
    return jsonify(pid=os.getpid(), ppid=os.getppid())
