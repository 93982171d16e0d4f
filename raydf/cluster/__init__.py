"""The actors of a fan-out: scheduler, seed and peers, and where they run."""
