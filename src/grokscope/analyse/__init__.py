"""The ``analyse`` stage: proxy splits, fit/generalisation/delay, probes, heads."""
