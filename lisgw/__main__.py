"""``python -m lisgw``: the same command line as the ``lisgw`` script."""

from lisgw.cli import main

main()
