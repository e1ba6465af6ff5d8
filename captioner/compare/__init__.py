"""Stage 9, comparison: a sweep's report (markdown, charts, tables) and the hook that writes it when a
sweep ends.
"""
