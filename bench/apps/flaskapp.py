"""Flask hello world: the same response through a real framework."""
from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello():
    return "Hello, World!"


application = app
