"""``python -m nlbench``: the same as the ``nlbench`` command."""

from nlbench.cli import main

main()
