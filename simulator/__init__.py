"""Cycle-approximate accelerator simulator that consumes nmlab containers."""
