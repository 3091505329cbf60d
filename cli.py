"""Run the isplit-export CLI from a source checkout: ``python cli.py vgg16 --top 3 --target jetson``.

The installed console script ``isplit-export`` is the same entry point (``isplit_export.cli:main``).
"""

import sys

from isplit_export.cli import main

if __name__ == "__main__":
    sys.exit(main())
