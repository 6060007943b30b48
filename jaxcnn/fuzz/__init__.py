"""Differential fuzzing of jaxcnn: random configurations of every op, each run in a worker
process (an abort inside XLA is caught and recorded), compared in float64 with PyTorch, with
``jaxcnn.reference`` and, for the lowering forms, with the one-lax-call piece.

``python -m jaxcnn fuzz --n 10000 --seed 0`` (``jaxcnn.fuzz.command``); ``runner`` and
``worker`` are the crash-isolating process pool, ``configs`` draws the configurations and
``checks`` runs one.
"""

__all__: list[str] = []
