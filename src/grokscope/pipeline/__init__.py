"""Running a whole study: the stage registry, ``grokscope run`` and ``grokscope demo``."""
