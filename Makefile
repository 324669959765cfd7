# ser-batch: `make demo` runs the pipeline end to end, `make test` runs the test suite.
# Both create .venv and install the package (with its dev extras) first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SER := $(VENV)/bin/ser-batch
SHARED_DATA ?= ../shared/data/ravdess/Audio_Speech_Actors_01-20_16k
OUT ?= output

.PHONY: install test demo pretrained bench bench-score accuracy clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q -ra

# The whole pipeline on RAVDESS in ../shared when it is there, else on input/:
# extract (rich recipe) -> train (speaker split) -> evaluate the held-out actors -> predict.
demo: install
	@if [ -d "$(SHARED_DATA)" ]; then data="$(SHARED_DATA)"; \
	elif [ -n "$$(find input -type f ! -name README.md 2>/dev/null | head -1)" ]; then data=input; \
	else echo "No audio found: put audio files (wav, flac, ogg, mp3, ...) in input/," \
	          "or place the RAVDESS copy at $(SHARED_DATA)." >&2; exit 1; fi; \
	set -e; \
	echo "== 1/4 extract: $$data -> $(OUT)/features"; \
	$(SER) extract "$$data" --out $(OUT)/features --recipe rich --overwrite; \
	if [ "$$data" = "$(SHARED_DATA)" ]; then \
	  echo "== 2/4 train: speaker split, actors 17-20 held out -> $(OUT)/model"; \
	  $(SER) train $(OUT)/features --out $(OUT)/model --split speaker --test-actors 17,18,19,20 --overwrite; \
	  echo "== 3/4 evaluate on the held-out actors -> $(OUT)/metrics.json"; \
	  $(SER) evaluate $(OUT)/model $(OUT)/features --actors 17,18,19,20 --out $(OUT)/metrics.json; \
	  echo "== 4/4 predict three held-out clips"; \
	  $(SER) predict $(SHARED_DATA)/Actor_17/03-01-05-02-01-01-17.wav \
	    $(SHARED_DATA)/Actor_18/03-01-04-01-02-01-18.wav $(SHARED_DATA)/Actor_19/03-01-03-02-01-02-19.wav \
	    --model $(OUT)/model; \
	else \
	  echo "== predict five files of input/ with the pretrained bundle (input/ has no labels to train on)"; \
	  find input -type f \( -iname '*.wav' -o -iname '*.flac' -o -iname '*.mp3' -o -iname '*.ogg' \
	    -o -iname '*.aif' -o -iname '*.aiff' -o -iname '*.au' -o -iname '*.opus' \) -print0 \
	    | head -z -n 5 | xargs -0 -r $(SER) predict; \
	fi; \
	echo "Done: results in $(OUT)/"

# Regenerate the pretrained bundle shipped in ser_batch/pretrained/ (all 20 actors).
pretrained: install
	$(SER) extract $(SHARED_DATA) --out $(OUT)/features-pretrained --recipe rich --overwrite
	$(SER) train $(OUT)/features-pretrained --out $(OUT)/pretrained --split none --overwrite
	rm -rf ser_batch/pretrained
	cp -r $(OUT)/pretrained ser_batch/pretrained
	cp docs/pretrained-NOTICE.md ser_batch/pretrained/NOTICE.md
	$(SER) predict $(SHARED_DATA)/Actor_01/03-01-05-02-01-01-01.wav

bench: install
	$(PY) benchmarks/extract.py

bench-score: install
	$(PY) benchmarks/score.py

accuracy: install
	$(PY) benchmarks/accuracy.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
