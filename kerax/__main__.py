"""``python -m kerax``: the ``kerax`` command."""

import sys

from kerax.cli import main

if __name__ == "__main__":
    sys.exit(main())
