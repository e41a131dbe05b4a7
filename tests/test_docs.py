"""The generated documents are current: the man page is what the option
table gives today, and every option in --help is in it and in the docs."""
import os
import re
import subprocess

from conftest import BIN, ROOT

MAN = os.path.join(ROOT, "docs", "gangway.1")


def run(*args):
    return subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=30)


def test_committed_man_page_is_generated_from_the_option_table():
    r = run("--print-man")
    assert r.returncode == 0, r.stderr
    with open(MAN) as f:
        committed = f.read()
    assert r.stdout == committed, "docs/gangway.1 is stale: run `make man`"


def test_man_page_renders_without_warnings():
    r = subprocess.run(["man", "--warnings", "-l", MAN], capture_output=True, text=True,
                       timeout=30, env=dict(os.environ, MANWIDTH="100", MAN_KEEP_STDERR="1"))
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr
    assert "--max-requests" in r.stdout.replace("\u2010", "-")


def test_every_option_is_in_the_man_page_and_the_migration_guide_names_real_ones():
    help_text = run("--help").stdout
    options = re.findall(r"^\s+(?:-\w, )?--([a-z0-9-]+)", help_text, re.M)
    assert len(options) > 60
    with open(MAN) as f:
        man = f.read().replace("\\-", "-")
    for o in options:
        assert "--" + o in man, o
    # Every gangway option the migration table points to exists.
    with open(os.path.join(ROOT, "docs", "migrating-from-uwsgi.md")) as f:
        guide = f.read()
    named = set(re.findall(r"\| `(--[a-z0-9-]+)`", guide))
    assert named, "the table lost its gangway column"
    for n in named:
        assert n[2:] in options, n
