"""Synthetic task data from templates: NLI rows and seating-order puzzles (puzzte)."""
