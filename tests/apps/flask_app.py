"""A real Flask application served by gangway (tests/test_flask.py).

GW_TEST_FLASK_FILE (passed with --env) names the file /download sends.
"""
import hashlib
import os

from flask import (Flask, abort, jsonify, request, send_file, stream_with_context,
                   Response)

app = Flask(__name__)


@app.route("/")
def index():
    return "flask index"


@app.route("/user/<name>")
def user(name):
    return "hello %s (%s)" % (name, request.args.get("lang", "none"))


@app.route("/json", methods=["POST"])
def json_echo():
    data = request.get_json()
    return jsonify(received=data, doubled=[x * 2 for x in data.get("numbers", [])],
                   method=request.method)


@app.route("/form", methods=["POST"])
def form():
    f = request.form
    return jsonify(name=f.get("name"), tags=f.getlist("tag"), note=f.get("note"))


@app.route("/upload", methods=["POST"])
def upload():
    up = request.files["file"]
    data = up.read()
    return jsonify(filename=up.filename, size=len(data),
                   sha256=hashlib.sha256(data).hexdigest(),
                   content_type=up.mimetype, field=request.form.get("field"))


@app.route("/stream")
def stream():
    n = int(request.args.get("n", "5"))

    def gen():
        for i in range(n):
            # request is only usable here thanks to stream_with_context
            yield "line %d of %s\n" % (i, request.args.get("who", "?"))
    return Response(stream_with_context(gen()), mimetype="text/plain")


@app.route("/missing")
def missing():
    abort(404)


@app.route("/boom")
def boom():
    raise RuntimeError("gangway-flask-boom")


@app.route("/download")
def download():
    return send_file(os.environ["GW_TEST_FLASK_FILE"], mimetype="application/octet-stream",
                     as_attachment=True, download_name="data.bin")


@app.errorhandler(404)
def not_found(e):
    return "custom not found: %s" % request.path, 404


@app.errorhandler(500)
def server_error(e):
    return "custom 500 handler", 500
