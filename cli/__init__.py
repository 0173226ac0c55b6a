"""Layer 6 (edge). The ``blipsearch`` command line (an edge): parses flags into Settings, calls the
composition root (``service/``), prints results and maps domain errors to exit codes."""
