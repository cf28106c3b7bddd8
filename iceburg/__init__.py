"""iceburg: turn a research-agent system's conversation logs into specialised local LLMs."""

__version__ = "0.1.0"
