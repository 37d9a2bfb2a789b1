"""Adapters that let agent frameworks keep their state in flatstate: each subpackage speaks
one framework's own interface (``langgraph``), on the storage flatstate already has."""
