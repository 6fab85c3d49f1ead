# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Where torch comes from: empty = the default index; a CPU-only wheel index saves ~3 GB (README).
TORCH_INDEX_URL ?=
STAMP := $(VENV)/.installed
TCMALLOC := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4))

export HF_HUB_OFFLINE := 1
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0

# torch work is 1.5-2.5x faster with tcmalloc preloaded (see README, "Speed").
RUN = $(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC)) $(PY)

.PHONY: install demo test lint bench bench-dev clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@if ! ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing libtcmalloc-minimal4 (faster torch on CPU)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4) >/dev/null 2>&1 \
		|| echo "tcmalloc not installed; continuing with the default allocator"; \
	fi
	$(PYTHON) -m venv $(VENV)
	# torch and torchvision first, pinned: pip takes this pair from the machine's disk.
	$(VENV)/bin/pip install -q $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install -q -e '.[dev,threatexchange]'
	touch $(STAMP)

demo: install
	$(MAKE) --no-print-directory _demo TCMALLOC="$(firstword $(wildcard /usr/lib/*/libtcmalloc_minimal.so.4))"

_demo:
	$(RUN) -m copytrace.benchmarks.demo

test: install
	@command -v chromium >/dev/null || ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ echo "installing chromium (headless-browser test of the dedup report)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
		|| echo "chromium not installed; the browser test will skip"; }
	$(MAKE) --no-print-directory _test TCMALLOC="$(firstword $(wildcard /usr/lib/*/libtcmalloc_minimal.so.4))"

_test:
	$(VENV)/bin/ruff check .
	$(RUN) -m pytest -q -ra

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(RUN) -m copytrace.benchmarks.throughput

bench-dev: install
	$(RUN) -m copytrace.benchmarks.dev_benchmark

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
