"""grokscope: trace delayed grammatical generalisation in language-model pre-training."""
__version__ = "0.1.0"
