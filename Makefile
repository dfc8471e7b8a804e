# The two quick-start commands live here: `make run` and `make test`.
# Each creates the virtual environment on first use, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test install bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/citybrain up

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/hub.py

clean:
	rm -rf $(VENV) .citybrain .pytest_cache
