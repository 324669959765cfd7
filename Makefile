# ser-batch: `make demo` runs the pipeline end to end, `make test` runs the test suite.
# Both create .venv and install the package (with its dev extras) first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SER := $(VENV)/bin/ser-batch
SHARED_DATA ?= ../shared/data/ravdess/Audio_Speech_Actors_01-20_16k
OUT ?= output

.PHONY: install test demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q -ra

# Extract features from RAVDESS in ../shared when it is there, else from input/.
demo: install
	@if [ -d "$(SHARED_DATA)" ]; then data="$(SHARED_DATA)"; \
	elif [ -n "$$(find input -type f ! -name README.md 2>/dev/null | head -1)" ]; then data=input; \
	else echo "No audio found: put audio files (wav, flac, ogg, mp3, ...) in input/," \
	          "or place the RAVDESS copy at $(SHARED_DATA)." >&2; exit 1; fi; \
	echo "== extract: $$data -> $(OUT)/features"; \
	$(SER) extract "$$data" --out $(OUT)/features --overwrite

bench: install
	$(PY) benchmarks/extract.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
