"""Trainers of the plugin models (looked up by ``get_trainer`` as ``<Model>Trainer``)."""

from recbole_genrec.trainer.collabembed_trainer import CollabEmbedTrainer  # CollabEmbed: teacher, tower, export
from recbole_genrec.trainer.generative_trainer import GenerativeTrainer

TIGERTrainer = GenerativeTrainer
DiscRecTrainer = GenerativeTrainer
PRORecTrainer = GenerativeTrainer
RPGTrainer = GenerativeTrainer  # AdamW + warm-up + cosine, clipping, length-bucketed batches

__all__ = ["CollabEmbedTrainer", "DiscRecTrainer", "GenerativeTrainer", "PRORecTrainer", "RPGTrainer", "TIGERTrainer"]
