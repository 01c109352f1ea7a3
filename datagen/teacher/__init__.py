"""The chain-of-thought teacher recipe: thoughts, score and reflect stages, and SFT preparation."""
