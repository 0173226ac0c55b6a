"""Layer 5 (composition root). The composition root: the only place that turns ``Settings`` into working parts.

Opened collections, models, search engines (with their re-ranker, keyword index, moderation
decisions and query encoder), captioners, moderators and indexing runs are built here, each
getting its collaborators through its constructor. The edges (``api/``, ``cli/``) call these
functions; nothing below this package reads settings or the environment.
"""
