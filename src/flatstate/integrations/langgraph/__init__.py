"""LangGraph on flatstate: ``pip install 'flatstate[langgraph]'``.

- :class:`FlatstateSaver` — a checkpointer (``BaseCheckpointSaver``) in a state directory
  or on PostgreSQL, with channel values stored by content and the extended methods
  (``prune``, ``copy_thread``, ``delete_for_runs``) the official savers lack.

>>> import tempfile
>>> from flatstate.integrations.langgraph import FlatstateSaver
>>> with FlatstateSaver.from_conn_string(tempfile.mkdtemp()) as saver:
...     saver.get_tuple({"configurable": {"thread_id": "t1"}}) is None
True
"""

from flatstate.integrations.langgraph.saver import FlatstateSaver

# FlatstateStore (the BaseStore) is exported here too: from .store, added at merge.

__all__ = ["FlatstateSaver"]
