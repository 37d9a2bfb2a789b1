"""Storage backends behind one contract (:class:`agentstate.backends.base.Backend`)."""

from agentstate.backends.base import Backend, RetryWrite, Row, Signal

__all__ = ["Backend", "RetryWrite", "Row", "Signal"]
