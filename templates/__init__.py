"""Bundled Jinja templates (package data; the files here are templates, not Python)."""
