"""flatstate behind the session interfaces of agent frameworks, one module per framework.

Each module imports its framework and nothing in the core imports it, so the framework is
needed only by those who use the integration (installed by the extra of the same name).
"""
