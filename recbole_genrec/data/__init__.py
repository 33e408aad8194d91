"""Dataset classes of the plugin models (looked up by ``create_dataset`` as ``<Model>Dataset``)."""
