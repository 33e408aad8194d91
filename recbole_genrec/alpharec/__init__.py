"""AlphaRec's experiments beyond training: zero-shot transfer and user intention queries.

- :mod:`recbole_genrec.alpharec.zeroshot`   train on a source dataset, evaluate on a target with no training there
- :mod:`recbole_genrec.alpharec.intention`  mix an encoded text query into the user representation
- :mod:`recbole_genrec.alpharec.cli`        their command lines

The model itself is :mod:`recbole_genrec.model.general_recommender.alpharec`.
"""
