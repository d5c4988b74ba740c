"""availmon: availability monitoring for a shared ICT service."""

__version__ = "0.1.0"
