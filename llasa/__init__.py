"""llasa: Llama-based text-to-speech over X-codec2 speech tokens."""

__version__ = "0.1.0"
