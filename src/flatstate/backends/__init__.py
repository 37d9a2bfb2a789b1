"""Storage backends behind one contract (:class:`flatstate.backends.base.Backend`)."""

from flatstate.backends.base import Backend, RetryWrite, Row, Signal

__all__ = ["Backend", "RetryWrite", "Row", "Signal"]
