"""Trainers of the plugin models (looked up by ``get_trainer`` as ``<Model>Trainer``)."""

from recbole_genrec.trainer.generative_trainer import GenerativeTrainer

TIGERTrainer = GenerativeTrainer
DiscRecTrainer = GenerativeTrainer
from recbole_genrec.enhance.trainer import CollabEmbedTrainer  # noqa: E402,F401  (CollabEmbed: teacher, tower, export)
PRORecTrainer = GenerativeTrainer
