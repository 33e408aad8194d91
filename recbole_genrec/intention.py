"""Moved: AlphaRec's intention library is :mod:`recbole_genrec.alpharec.intention` and its command line
``python -m recbole_genrec.alpharec.cli intention``. This module re-exports both so old imports and
``python -m recbole_genrec.intention`` keep working.
"""

import sys

from recbole_genrec.alpharec.intention import *  # noqa: F401,F403
from recbole_genrec.alpharec.cli import intention_main as main

if __name__ == "__main__":
    main(sys.argv[1:])
