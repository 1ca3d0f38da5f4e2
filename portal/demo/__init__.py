"""The demo model that openmaas trains for itself: see :mod:`portal.demo.builder`.

``corpus.jsonl`` is the shipped bilingual instruction corpus it learns from. The
builder is not imported here because it pulls in torch and transformers.
"""
