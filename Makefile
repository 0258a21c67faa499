# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU wheel of torch lies in /opt/wheels on our machines; elsewhere pip takes it from
# PyTorch's CPU index. constraints/cpu.txt pins it: the library's own metadata has no
# upper bound on torch (a user's CUDA torch must satisfy it), so the pin lives here.
WHEELS := $(wildcard /opt/wheels)
FIND_LINKS := $(if $(WHEELS),--find-links $(WHEELS),--extra-index-url https://download.pytorch.org/whl/cpu)
PIP_INSTALL := $(PIP) install -q $(FIND_LINKS) -c constraints/cpu.txt

.PHONY: demo dashboard test venv install install-core install-dev check-cpu lint bench clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@touch $@

# torch is installed first so that pip never reaches for a CUDA build; then every extra
# (`all`: the demo compresses to ONNX, writes the report, audits fairness).
$(VENV)/.installed: $(VENV)/.created pyproject.toml constraints/cpu.txt
	$(PIP_INSTALL) torch
	$(PIP_INSTALL) -e ".[all,examples]"
	@$(MAKE) --no-print-directory check-cpu
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP_INSTALL) -e ".[all,dev,examples]"
	@$(MAKE) --no-print-directory check-cpu
	@touch $@

# The core alone (tabular and text models, gbm, registry, CLI, serving): what
# `pip install foundry-mlops` gives; docs/INSTALL.md lists what each extra adds.
install-core: $(VENV)/.created
	$(PIP_INSTALL) torch
	$(PIP_INSTALL) -e .
	@$(MAKE) --no-print-directory check-cpu

# A CUDA build of torch would have brought several GB of nvidia-* packages.
check-cpu:
	@if $(PIP) list 2>/dev/null | grep -i '^nvidia-'; then \
	  echo "error: nvidia-* packages were installed (a CUDA torch); see constraints/cpu.txt" >&2; \
	  exit 1; fi

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

# --durations=25: every CI log shows where the suite's time goes (its budget: under 20
# minutes on an idle 2-core machine).
test: $(VENV)/.installed-dev
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m pytest -q --durations=25 tests

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check src tests benchmarks examples

bench: $(VENV)/.installed
	$(PY) benchmarks/train_overhead.py

clean:
	rm -rf $(VENV) .foundry demo-output build *.egg-info
