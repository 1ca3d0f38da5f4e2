"""Business operations of the dataset hub, as verbs: :mod:`repos` (create, card, star,
delete), :mod:`versions` (uploads, downloads, deletion), :mod:`jobs` (ingest, statistics,
processing), :mod:`lineage`, :mod:`files` (``/v1/files``)."""
