"""``python -m agentstate``: the same as the ``agentstate`` command."""

from agentstate.cli import main

main()
