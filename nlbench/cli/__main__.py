"""``python -m nlbench.cli``: the same as the ``nlbench`` command."""

from nlbench.cli import main

main()
