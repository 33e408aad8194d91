"""Collaboration-aware enhancement of content item embeddings (used by ``CollabEmbed``).

- :mod:`recbole_genrec.collabembed.losses`   InfoNCE with in-batch + mined hard negatives, window positives
- :mod:`recbole_genrec.collabembed.teacher`  the frozen sequential teacher: build, load, train on the training split
- :mod:`recbole_genrec.trainer.collabembed_trainer`  ``CollabEmbedTrainer``: teacher first, then the tower, then the export
"""
