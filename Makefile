# Every target creates .venv if it is missing and installs the package into it (editable), with
# the extras the target needs: `make train` the train extra; `make test` the dev, train and interop
# extras and PyTorch's CPU build (the comparisons; the torch extra's lower bound, pinned here).
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
TRAIN_STAMP := .venv/.installed-train
DOCS_STAMP := .venv/.installed-docs
TORCH := torch==2.13.0

.venv/.created:
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	touch $@

$(TRAIN_STAMP): pyproject.toml .venv/.created
	$(PY) -m pip install -q -e '.[train]'
	touch $@

$(VENV_STAMP): pyproject.toml .venv/.created
	$(PY) -m pip install -q -e '.[dev,train,interop]'
	$(PY) -m pip install -q $(TORCH) || echo "torch not installed: PyTorch comparisons will be skipped"
	touch $@

$(DOCS_STAMP): pyproject.toml .venv/.created
	$(PY) -m pip install -q -e '.[docs]'
	touch $@

# The lowest jax/jaxlib that pyproject.toml declares, in a venv of its own (torch too, so the
# PyTorch comparisons and the fuzzer run there as well).
LOWEST_VENV := build/venv-jax-lowest
LOWEST_PY := $(LOWEST_VENV)/bin/python
LOWEST_STAMP := $(LOWEST_VENV)/.installed
JAX_LOWEST := $(shell sed -n 's/^ *"jax>=\([0-9.]*\)",*$$/\1/p' pyproject.toml)
JAXLIB_LOWEST := $(shell sed -n 's/^ *"jaxlib>=\([0-9.]*\)",*$$/\1/p' pyproject.toml)

$(LOWEST_STAMP): pyproject.toml
	test -x $(LOWEST_PY) || python3 -m venv $(LOWEST_VENV)
	$(LOWEST_PY) -m pip install -q --upgrade pip
	$(LOWEST_PY) -m pip install -q -e '.[dev,train]' 'jax==$(JAX_LOWEST)' 'jaxlib==$(JAXLIB_LOWEST)'
	$(LOWEST_PY) -m pip install -q $(TORCH) || echo "torch not installed: PyTorch comparisons will be skipped"
	touch $(LOWEST_STAMP)

.PHONY: venv venv-lowest train test test-full test-lowest gradcheck bench docs wheel-check
venv: $(VENV_STAMP)
venv-lowest: $(LOWEST_STAMP)

# The default MNIST-1D run (mnist1d-resnet, 4000 steps): prints the test accuracy, writes the
# report, metrics and plots to runs/mnist1d-mnist1d-resnet-seed0/.
train: $(TRAIN_STAMP)
	$(PY) -m jaxcnn train

gradcheck: $(VENV_STAMP)
	$(PY) -m jaxcnn gradcheck

# Each tier is two pytest runs, both run, either failing fails the target: the tests on one
# device, then those marked `multidevice` (meshes of up to 8 devices) in a process of their own
# with eight forced CPU devices (XLA reads the flag once, when JAX starts). Only the files that
# mark such tests are collected by the second run. $(1): the python; $(2): the environment.
MULTIDEVICE_TESTS = $(shell grep -l 'pytest.mark.multidevice' tests/test_*.py)
define pytest_runs
	status=0; \
	$(2) $(1) -m pytest -n 2 -m "not multidevice" tests || status=1; \
	$(2) XLA_FLAGS="$$XLA_FLAGS --xla_force_host_platform_device_count=8" \
		$(1) -m pytest -n 2 -m multidevice $(MULTIDEVICE_TESTS) || status=1; \
	exit $$status
endef

# The default tier: every op, impl, dtype, layout and dimension, the parametrised grids sampled
# pairwise (every value meets every other value once), the CI fuzz sample; no `slow` tests.
# Float32 with x64 off (the default mode, the native kernels) unless a test is marked `x64`;
# every test compiled fast (tests/conftest.py) unless it is marked `users_compile`.
test: $(VENV_STAMP)
	$(call pytest_runs,$(PY))

# The full tier: every case of every grid, the `slow` tests, 10x the hypothesis examples,
# compiled as users' programs compile (but the `x64` tests).
# JAXCNN_TEST_CASES=<k> instead runs up to k cases of each grid (JAX's JAX_NUM_GENERATED_CASES).
test-full: $(VENV_STAMP)
	$(call pytest_runs,$(PY),JAXCNN_TEST_CASES=all)

# The suite (default tier) on the lowest declared jax/jaxlib (pyproject.toml's lower bounds). Random keys draw
# the stream newer JAX draws by default (partitionable threefry, the default from 0.5.0), so a
# test's seeded draws are the same numbers in both environments.
test-lowest: $(LOWEST_STAMP)
	$(LOWEST_PY) -c 'import jax; assert jax.__version__ == "$(JAX_LOWEST)", jax.__version__'
	$(call pytest_runs,$(LOWEST_PY),JAX_THREEFRY_PARTITIONABLE=1)

bench: $(VENV_STAMP)
	$(PY) -m jaxcnn bench

# The documentation site (mkdocs.yml, docs/), built into site/; --strict: a broken link or
# reference fails the build.
docs: $(DOCS_STAMP)
	$(PY) -m mkdocs build --strict

# The sdist and the wheel built into dist/, checked, and the wheel installed alone into a fresh
# venv and run from outside the checkout (.ci/wheel-smoke says what it checks).
wheel-check: $(VENV_STAMP)
	.ci/wheel-smoke $(PY)
