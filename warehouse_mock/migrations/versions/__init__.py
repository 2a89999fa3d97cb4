"""Revision scripts of the warehouse database, oldest first (see the parent package)."""
