# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU wheel of torch lies in /opt/wheels on our machines; elsewhere pip uses PyPI.
WHEELS := $(wildcard /opt/wheels)
FIND_LINKS := $(if $(WHEELS),--find-links $(WHEELS),)
TORCH_PIN ?= torch==2.13.0

.PHONY: demo dashboard test venv install install-dev lint bench clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@touch $@

# torch is installed first and pinned so that the project's range is already met
# by the CPU build and pip never reaches for a CUDA build.
$(VENV)/.installed: $(VENV)/.created pyproject.toml
	$(PIP) install -q $(FIND_LINKS) "$(TORCH_PIN)"
	$(PIP) install -q $(FIND_LINKS) -e ".[examples]"
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q $(FIND_LINKS) -e ".[dev,examples]"
	@touch $@

venv install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(PY) examples/demo.py

# After `make demo`: serve the demo's models with the dashboard on; the admin token to
# paste into the page is printed (a fresh random one unless FOUNDRY_ADMIN_TOKEN is set).
dashboard: $(VENV)/.installed
	@token=$${FOUNDRY_ADMIN_TOKEN:-$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(18))')}; \
	echo "dashboard: http://127.0.0.1:8000/dashboard  admin token: $$token"; \
	FOUNDRY_HOME=$(CURDIR)/.foundry FOUNDRY_ADMIN_TOKEN=$$token \
	  $(VENV)/bin/foundry serve penguins:compressed --host 127.0.0.1 --port 8000

test: $(VENV)/.installed-dev
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m pytest -q tests

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check src tests benchmarks examples

bench: $(VENV)/.installed
	$(PY) benchmarks/train_overhead.py

clean:
	rm -rf $(VENV) .foundry demo-output build *.egg-info
