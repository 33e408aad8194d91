"""Train and evaluate a recbole_genrec or RecBole model (mirrors RecBole's run_recbole.py).

    python run_recbole_genrec.py --model=TIGER --dataset=ml-100k
    python run_recbole_genrec.py --model=SASRec,BPR,NGCF --dataset=ml-100k
    python run_recbole_genrec.py --list-models
"""

import sys

from recbole_genrec.cli import main

if __name__ == "__main__":
    sys.exit(main())
