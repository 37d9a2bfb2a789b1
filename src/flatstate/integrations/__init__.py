"""Integrations with agent frameworks: one package per framework, each behind an extra of
the same name, importing its framework only there and never imported by the core."""
