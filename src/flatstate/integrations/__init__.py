"""flatstate behind the session interfaces of agent frameworks, one module per framework.

Each module imports its framework and nothing in flatstate imports these modules, so a
framework is needed only by whoever uses its adapter (installed with the extra of the same
name, e.g. ``pip install 'flatstate[adk]'``).
"""
