"""Tool-selection data: synthesised requests over a tool catalogue, optionally read from a database."""
