"""The ``report`` stage: the self-contained HTML report, its figures and tables."""
