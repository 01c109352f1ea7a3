"""Instruction backtranslation (Humpback): the inverse seed pairs, self-augmentation and curation."""
