"""Figures: each function draws on a matplotlib ``Axes`` it is given and returns it.

Saving files is the caller's job (the CLI, or analysis/ scripts). One module per kind of figure.
"""
