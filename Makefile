# Every target creates .venv if it is missing and installs the package into it.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q torch==2.13.0 || echo "torch not installed: PyTorch comparisons will be skipped"
	touch $(VENV_STAMP)

.PHONY: venv train test gradcheck bench
venv: $(VENV_STAMP)

# The default MNIST-1D run (mnist1d-resnet, 4000 steps): prints the test accuracy, writes the
# report, metrics and plots to runs/mnist1d-mnist1d-resnet-seed0/.
train: $(VENV_STAMP)
	$(PY) -m jaxcnn train

gradcheck: $(VENV_STAMP)
	$(PY) -m jaxcnn gradcheck

test: $(VENV_STAMP)
	$(PY) -m pytest -n 2 tests

bench: $(VENV_STAMP)
	$(PY) -m jaxcnn bench
