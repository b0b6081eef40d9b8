# Two commands a new user needs: `make demo` and `make test`. Both install first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data demo test test-slow lint bench clean

# The stamp is rebuilt whenever pyproject.toml changes, so pins stay honoured.
# torch goes first and exactly pinned: the CPU wheel on disk, never a CUDA download.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,kserve]'
	touch $@

install: $(VENV)/.installed

# Debian's dataset-fashion-mnist holds the embedded default data set.
data:
	@if [ -n "$$WEIGHTSHARE_DATA" ] || [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian package dataset-fashion-mnist ..."; \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)); \
	else \
	  echo "Fashion-MNIST not found in $(FMNIST)."; \
	  echo "Install it with: sudo apt-get install dataset-fashion-mnist"; \
	  echo "or put the four IDX files (train-images-idx3-ubyte.gz, ...) in a folder and set WEIGHTSHARE_DATA=/that/folder"; \
	  exit 1; \
	fi

demo: install data
	$(BIN)/weightshare demo

test: install data
	$(BIN)/python -m pytest

test-slow: install data
	$(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check .

bench: install data
	$(BIN)/python benchmarks/elastic_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info
