"""Batches of fiches: one generic workflow that transcription batches and audit batches both run.

A batch holds one item per fiche; each item's work is an *operation* that another app registers
(``services.register_operation`` / ``register_item_state`` in its ``AppConfig.ready``: transcriptions
for ``transcription``, audits for ``audit``). ``batches`` imports neither of them: it knows fiches
(the scope check before anything is queued) and ``realtime`` (the ``batch.*`` events) only.
"""
