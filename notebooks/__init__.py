"""The report notebooks, shipped as package data of ``h2ws.notebooks`` so that ``h2ws report``
finds them in an installed wheel as in a checkout.  Open them with ``jupyter lab notebooks/``."""
