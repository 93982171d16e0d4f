"""Test helpers: a local Hugging Face / ModelScope hub emulator and synthetic repos."""

from raydf.testing.hub import HubEmulator, make_dataset, make_model

__all__ = ["HubEmulator", "make_dataset", "make_model"]
