# fedmq's developer and CI entry points. `make test` is what CI runs.

PYTHON ?= python3
VENV := .venv
RABBITMQ_SERVER := /usr/lib/rabbitmq/bin/rabbitmq-server
POLICY_RC_D := /usr/sbin/policy-rc.d

# Each recipe is one bash script that stops at its first failing command.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:

.PHONY: deps venv test lint pythons demo bench docs clean

# RabbitMQ from Debian. The test suite starts its own throwaway node, so the
# package must not start a system broker on port 5672: a policy-rc.d that
# exits 101 tells the maintainer scripts not to start services. systemd is
# there for `systemd-analyze verify` of the shipped unit file, prometheus for
# `promtool check rules` of the example alert rules in contrib/prometheus/.
deps:
	@if [ -x $(RABBITMQ_SERVER) ] && command -v systemd-analyze >/dev/null && command -v promtool >/dev/null; then exit 0; fi
	if [ "$$(id -u)" != 0 ]; then
		echo "rabbitmq-server, systemd or prometheus is not installed; installing them needs root. Run:" >&2
		echo "  sudo make deps" >&2
		echo "or, as root: apt-get update && apt-get install -y rabbitmq-server systemd prometheus" >&2
		exit 1
	fi
	echo "Installing rabbitmq-server, systemd and prometheus (without starting any service)"
	backup=
	if [ -e $(POLICY_RC_D) ]; then
		backup=$$(mktemp)
		cp -p $(POLICY_RC_D) "$$backup"
	fi
	restore() {
		if [ -n "$$backup" ]; then mv "$$backup" $(POLICY_RC_D); else rm -f $(POLICY_RC_D); fi
	}
	trap restore EXIT
	printf '#!/bin/sh\nexit 101\n' > $(POLICY_RC_D)
	chmod 755 $(POLICY_RC_D)
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server systemd prometheus

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml tests/anchors.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test,lint,docs]' -e tests/fedora_schemas
	# An editable install leaves the checkout off sys.path, where twistd looks
	# for twisted/plugins/fedmq_plugin.py: put it there.
	purelib=$$($(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
	echo "$(CURDIR)" > "$$purelib/fedmq-checkout.pth"
	# The sdists of the tools the compatibility tests run fedmq against.
	$(VENV)/bin/python -m tests.anchors
	touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	# Every changelog fragment must build into the changelog.
	$(VENV)/bin/towncrier build --draft --version 0.0.0 > /dev/null

test: deps venv lint docs pythons
	$(VENV)/bin/pytest

# The unit suite on every other Python the package claims (setup.cfg's
# python_requires), with interpreters found on PATH or under pyenv; one that
# is missing is reported, not installed (this machine reaches no Python builds).
OTHER_PYTHONS := 3.10 3.12 3.13
pythons: venv
	@for version in $(OTHER_PYTHONS); do
		python=
		for candidate in $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$version.*/bin/python$$version 2>/dev/null) $$(command -v python$$version || true); do
			if $$candidate -c pass 2>/dev/null; then python=$$candidate; break; fi
		done
		if [ -z "$$python" ]; then
			echo "WARNING: python$$version not found: the unit suite did not run on Python $$version" >&2
			continue
		fi
		venv=.venv-$$version
		if [ ! -e $$venv/.installed ] || [ setup.cfg -nt $$venv/.installed ]; then
			$$python -m venv $$venv
			$$venv/bin/pip install --quiet -e '.[test]' -e tests/fedora_schemas
			$$venv/bin/python -m tests.anchors > /dev/null
			touch $$venv/.installed
		fi
		echo "Unit tests on $$($$venv/bin/python --version)"
		$$venv/bin/python -m pytest -q -p no:cacheprovider tests/unit
	done

# A consumer against a throwaway broker, with a few demo messages; stops by itself.
demo: deps venv
	$(VENV)/bin/python -m fedmq.demo

# The benchmark compares against fedora-messaging, which only it needs.
bench: deps venv
	$(VENV)/bin/pip install --quiet -e '.[bench]'
	$(VENV)/bin/python -m bench

docs: venv
	$(VENV)/bin/sphinx-build -W -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .venv-3.* build dist docs/_build .pytest_cache .mypy_cache .ruff_cache
	rm -rf *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
