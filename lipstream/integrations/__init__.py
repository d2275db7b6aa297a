"""Adapters that put lipstream inside other frameworks (each behind its own optional extra)."""
