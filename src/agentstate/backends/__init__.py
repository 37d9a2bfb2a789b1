"""Storage backends behind one contract (:class:`agentstate.backends.base.Backend`)."""

from agentstate.backends.base import Backend, Row, Signal

__all__ = ["Backend", "Row", "Signal"]
