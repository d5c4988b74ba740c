# Two commands for a newcomer: `make demo` and `make test`. Everything else is what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Debian packages the tests start as real peers (installed with apt-get when missing).
DEBS := mosquitto mosquitto-clients prometheus snmpd snmp sip-tester dnsmasq-base iproute2 systemd \
	openssl chromium poppler-utils prometheus-alertmanager procps
# The peers `make bench` measures availmon against (bench/README.md); not needed by `make test`.
BENCH_DEBS := fping prometheus-blackbox-exporter nginx-light mosquitto snmpd snmp iproute2
# e.g. make bench BENCH_ARGS="--runs 5 --rest-seconds 60 --only http,icmp"
BENCH_ARGS ?=

.PHONY: demo test bench lint format venv debs clean dist

# setuptools prints a generic caution on every editable install (folders named like the
# package): silenced; the wheel users install (make dist) prints nothing.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	@echo "availmon's command line, in another terminal in this folder (README, The command line):"
	@echo "  . $(BIN)/activate; export AVAILMON_CONFIG=config/demo.toml; availmon --help"
	@echo "  (or without activating: $(BIN)/availmon outages list --config config/demo.toml)"
	@$(BIN)/availmon demo

debs:
	@missing=""; for p in $(DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy availmon agent collector probes bench

test: $(STAMP) debs lint
	$(BIN)/pytest -q

# Speed, measured side by side with the peer tools (bench/README.md). Never fails the build:
# a measure that cannot run is reported in the table instead.
bench: $(STAMP)
	-@$(MAKE) --no-print-directory debs DEBS="$(BENCH_DEBS)"
	-$(BIN)/python -m bench.run $(BENCH_ARGS)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The wheel, and an install bundle for a site's or the centre's Debian host: the wheel, the
# systemd units, systemd/install.sh and the example configs (docs/operations.md).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
BUNDLE := availmon-$(VERSION)
dist: $(STAMP)
	rm -rf dist/$(BUNDLE) dist/*.whl
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .
	mkdir -p dist/$(BUNDLE)
	cp dist/availmon-$(VERSION)-*.whl systemd/install.sh systemd/*.service dist/$(BUNDLE)/
	cp config/demo.toml dist/$(BUNDLE)/example-estate.toml
	mkdir -p dist/$(BUNDLE)/doc/docs
	cp README.md dist/$(BUNDLE)/doc/ && cp docs/*.md dist/$(BUNDLE)/doc/docs/
	tar -C dist -czf dist/$(BUNDLE).tar.gz $(BUNDLE)
	@echo "built dist/$(BUNDLE).tar.gz (unpack on the host, then: sudo ./install.sh agent|collector ...)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache state build dist
