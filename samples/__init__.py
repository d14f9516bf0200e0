"""The sample capture, shipped as package data of ``h2ws.samples`` so that a user who only ran
``pip install h2ws`` can try the commands: ``h2ws extract "$(h2ws sample-path)" -o out/``."""
