"""Imports every experiment module so that each registers itself (one import per module)."""
