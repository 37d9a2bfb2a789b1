"""LangGraph on flatstate (``pip install 'flatstate[langgraph]'``); see docs/langgraph.md.

- :class:`FlatstateStore`: a ``BaseStore`` (long-term memory) in a state directory.
"""

from flatstate.integrations.langgraph.store import FlatstateStore

__all__ = ["FlatstateStore"]
