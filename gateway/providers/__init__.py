"""Upstream providers behind one protocol; see ``base``."""
