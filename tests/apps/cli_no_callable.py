"""Imports fine but has neither `application` nor `app` (tests/test_cli.py)."""
SOMETHING_ELSE = 1
