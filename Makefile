# The two commands of the README:
#   make run   set everything up, start PostGIS, load the Belize demo, serve on :8000
#   make test  set everything up and run the whole test suite (what CI runs)
.PHONY: run test setup lint bench db-stop

run:
	@./scripts/setup.sh
	.venv/bin/observatory up

test:
	@OBSERVATORY_SETUP_TESTS=1 ./scripts/setup.sh
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/pytest --durations=30

setup:
	@./scripts/setup.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench:
	@./scripts/setup.sh
	.venv/bin/python -m bench.ingest

db-stop:
	.venv/bin/observatory db stop
