"""Writing results down.

Tables (CSV, Markdown, LaTeX), the paper's layouts and its published numbers.
"""
