"""selfcorrect: train, run and measure self-correction in language models."""

__version__ = "0.1.0"
