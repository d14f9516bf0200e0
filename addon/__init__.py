"""The mitmproxy integration of h2ws (``h2ws.addon``); ``addon.py`` is the script to load."""
