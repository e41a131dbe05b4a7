"""A Flask app over --https: the URLs it builds say https (tests/test_tls.py)."""
from flask import Flask, jsonify, redirect, request, url_for

app = Flask(__name__)


@app.route("/where")
def where():
    return jsonify(url=url_for("where", _external=True), scheme=request.scheme,
                   secure=request.is_secure)


@app.route("/go")
def go():
    return redirect(url_for("where", _external=True))
