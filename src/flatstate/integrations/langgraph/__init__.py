"""LangGraph on flatstate: ``pip install 'flatstate[langgraph]'``; see docs/langgraph.md.

- :class:`FlatstateSaver`: a checkpointer (``BaseCheckpointSaver``) in a state directory
  or on PostgreSQL, with channel values stored by content and the extended methods
  (``prune``, ``copy_thread``, ``delete_for_runs``) the official savers lack.
- :class:`FlatstateStore`: a ``BaseStore`` (long-term memory) in a state directory or on
  PostgreSQL.

>>> import tempfile
>>> from flatstate.integrations.langgraph import FlatstateSaver
>>> with FlatstateSaver.from_conn_string(tempfile.mkdtemp()) as saver:
...     saver.get_tuple({"configurable": {"thread_id": "t1"}}) is None
True
"""

from flatstate.integrations.langgraph.saver import FlatstateSaver
from flatstate.integrations.langgraph.store import FlatstateStore

__all__ = ["FlatstateSaver", "FlatstateStore"]
