"""`python -m fireside` (what torchrun launches with `-m fireside`)."""

import sys

from fireside.cli import main

if __name__ == "__main__":
    sys.exit(main())
