"""Reports: the notebook runner, the figures, and the text summary."""
