"""The recipe of the shipped default model: corpus, training, evaluation (not installed).

Run its scripts from the repository root as modules: ``python -m model.train``,
``python -m model.evaluate``, ``python -m model.sweep``. See ``model/README.md``.
"""
