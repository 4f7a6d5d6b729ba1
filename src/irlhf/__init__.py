"""irlhf: why do we need RLHF? Measured on worlds with a known expert and a known reward."""

__version__ = "0.1.0"
