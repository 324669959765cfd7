"""``python -m ser_batch.cli``: the same command line as the ``ser-batch`` script."""

from ser_batch.cli import main

main()
