"""Shared test support: factories, the subscriber server, hostile peers, tokens and process helpers."""
