"""Metrics computed from a World and a Policy: exposure bias, degeneration, reward."""
