"""``python -m isplit_export ...``: the same CLI as the ``isplit-export`` console script."""

import sys

from isplit_export.cli import main

if __name__ == "__main__":
    sys.exit(main())
