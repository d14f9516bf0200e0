# The two commands of the README: `make demo` (the main job) and `make test`.
# Both set everything up first (scripts/setup.sh is idempotent).
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= out/demo

.PHONY: setup demo test lint typecheck bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/h2ws extract samples/h2c_hypercorn_ws.pcap -o $(OUT)
	$(VENV)/bin/h2ws summary $(OUT)
	@echo "tables written to $(OUT)/"

test: setup
	$(VENV)/bin/ruff check addon analysis tests bench
	$(VENV)/bin/ruff format --check addon analysis tests bench
	$(VENV)/bin/mypy addon analysis
	$(VENV)/bin/pytest -q

bench: setup
	$(PY) bench/bench_extract.py

clean:
	rm -rf out build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
