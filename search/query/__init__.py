"""The query language: weighted parts and their score (``parts``, ``score``), the one-box
parser (``parser``, ``dates``), building a query from a request (``build``), and the
``no_confident_match`` verdict (``confidence``). See docs/queries.md."""
