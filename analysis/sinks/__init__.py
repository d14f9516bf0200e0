"""Sinks: streaming table writers and the table reader."""
