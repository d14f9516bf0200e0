# The two commands of the README: `make demo` (the main job) and `make test`.
# Both set everything up first (scripts/setup.sh is idempotent).
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= out/demo

.PHONY: setup demo test lint typecheck bench bench-tls bench-live clean

setup:
	@bash scripts/setup.sh

demo: setup
	OUT=$(OUT) bash scripts/demo.sh

test: setup lint typecheck
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check addon analysis testkit tests bench scripts
	$(VENV)/bin/ruff format --check addon analysis testkit tests bench scripts

typecheck: setup
	@# mypy cannot see through the editable install's package-dir mapping: give it a tree.
	rm -rf build/typecheck && mkdir -p build/typecheck/h2ws
	ln -s ../../../analysis build/typecheck/h2ws/analysis
	ln -s ../../../addon build/typecheck/h2ws/addon
	ln -s ../../../testkit build/typecheck/h2ws/testkit  # h2ws demo imports h2ws.testkit.demo
	MYPYPATH=build/typecheck $(VENV)/bin/mypy -p h2ws.analysis -p h2ws.addon

bench: setup
	$(PY) bench/bench_extract.py
	$(PY) bench/bench_metrics.py

bench-tls: setup
	$(PY) bench/bench_tls.py

bench-live: setup
	$(PY) bench/bench_live.py

clean:
	rm -rf out build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
