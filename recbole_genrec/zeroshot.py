"""Moved: AlphaRec's zeroshot library is :mod:`recbole_genrec.alpharec.zeroshot` and its command line
``python -m recbole_genrec.alpharec.cli zeroshot``. This module re-exports both so old imports and
``python -m recbole_genrec.zeroshot`` keep working.
"""

import sys

from recbole_genrec.alpharec.zeroshot import *  # noqa: F401,F403
from recbole_genrec.alpharec.cli import zeroshot_main as main

if __name__ == "__main__":
    main(sys.argv[1:])
