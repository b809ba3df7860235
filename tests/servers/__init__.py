"""Loopback servers that speak each vendor's wire format, for the tests and for
trying providers by hand (``python -m tests.servers.<vendor> --help``)."""
