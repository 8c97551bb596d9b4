# Two commands for a newcomer: `make demo` (the main job on the built-in default) and `make test`.
SHELL := /bin/bash
BIN := $(CURDIR)/.venv/bin
# Outside the checkout: inside it, ansible-test would list files through the outer git repo.
BUILD := $(HOME)/.cache/kubepki-fleet/ansible_collections/kubepki/fleet
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export PATH := $(BIN):$(PATH)

.PHONY: demo test deps build sanity units lint integration bench clean

demo: deps
	tests/demo.sh

test: deps sanity units lint integration

deps:
	tests/setup.sh

# ansible-test needs the collection under ansible_collections/<ns>/<name> as a real copy.
build:
	rm -rf $(BUILD)
	mkdir -p $(BUILD)
	tar -c --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./.collections \
	    --exclude=./tests/output --exclude=./tests/lab/output --exclude=./report --exclude=__pycache__ . \
	  | tar -x -C $(BUILD)

sanity: build
	cd $(BUILD) && ansible-test sanity --venv --python 3.11 --color no

units: build
	cd $(BUILD) && ansible-test units --venv --python 3.11 --color no

lint:
	ansible-lint --offline --profile production

integration:
	$(BIN)/python -m pytest -q tests/integration

bench: deps
	for b in tests/bench/bench_*.py; do $(BIN)/python "$$b" || exit 1; done

clean:
	rm -rf build tests/output report
