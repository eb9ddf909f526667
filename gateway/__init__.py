"""A hybrid realtime/batch LLM gateway."""

__version__ = "0.1.0"
