"""``python -m flatstate``: the same as the ``flatstate`` command."""

from flatstate.cli import main

main()
