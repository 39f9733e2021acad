# certbot-wazo: `make demo` shows the whole product on a sandbox; `make test` runs every check.
PYTHON_NEW := .venv/bin/python
PYTHON_DEB := .venv-debian/bin/python
# Python may write its bytecode caches (__pycache__, ignored by git): a shell that forbids it
# (PYTHONDONTWRITEBYTECODE) would make every certbot-wazo, certbot and sandbox process of the
# tests and the benchmark compile its modules again, which no installed package does.
unexport PYTHONDONTWRITEBYTECODE
# `make test` runs its suites side by side (each has its own network namespace or free ports, its
# own pebble, PostgreSQL cluster and sandbox roots); the end-to-end and remote suites also split
# their files over E2E_WORKERS pytest workers (pytest-xdist).
JOBS ?= 6
E2E_WORKERS ?= 2

.PHONY: bootstrap demo test lint unit mutation e2e database releases remote test-platforms bench deb clean

bootstrap:
	@bash .ci/bootstrap

demo:
	@bash .ci/bootstrap demo
	$(PYTHON_DEB) -m tests.sandbox.demo

lint: bootstrap
	.venv/bin/ruff check certbot_wazo tests hooks
	.venv/bin/mypy

unit: bootstrap
	@bash .ci/unit

# Mutants of the transaction, its undo log and its file writes against the unit tests; prints
# the survivors (each is discussed in the issue's note). Not part of `make test` (minutes).
mutation: bootstrap
	.venv/bin/pip install -q mutmut
	rm -rf mutants
	.venv/bin/mutmut run --max-children 2 >/dev/null || true
	.venv/bin/mutmut results

e2e: bootstrap
	CERTBOT_WAZO_REQUIRE=pypi,debian $(PYTHON_NEW) -m pytest -q -n $(E2E_WORKERS) --dist loadfile tests/e2e

# Every release of the corpus (tests/data/releases) on real ports, in a private network namespace.
# The tests' own PostgreSQL (Debian's, private socket, no TCP) with each release's asterisk schema.
database: bootstrap
	CERTBOT_WAZO_REQUIRE=postgres $(PYTHON_NEW) -m pytest -q tests/database

releases: bootstrap
	CERTBOT_WAZO_REQUIRE=netns,postgres unshare --net sh -c 'ip link set lo up && exec $(PYTHON_NEW) -m pytest -q tests/releases'

# Remote targets (tests/sandbox/remote.py): sandbox hosts each in a network namespace of its own,
# reached over SSH through Debian's real sshd, under a private network namespace.
remote: bootstrap
	CERTBOT_WAZO_REQUIRE=netns unshare --net sh -c 'ip link set lo up && exec $(PYTHON_NEW) -m pytest -q -n $(E2E_WORKERS) --dist loadfile tests/remote'

test: bootstrap
	@$(MAKE) --no-print-directory -j$(JOBS) --output-sync=target lint unit e2e database releases remote

# The Debian package built, linted, installed and run end to end in a chroot of Debian 11, 12 and
# 13, each with its own certbot (tests/platforms; chroots cached in /var/cache/certbot-wazo).
# PLATFORMS="bullseye" for one release.
test-platforms:
	/usr/bin/python3 -m tests.platforms.matrix $(PLATFORMS)

# The Debian package python3-certbot-wazo_…_all.deb, built and checked by lintian, into dist/:
# for the Debian this machine runs (its build tools are installed), or DEBIAN=bullseye,
# bookworm or trixie for that release, built in the cached chroot of `make test-platforms`.
DEBIAN ?=
deb:
ifeq ($(DEBIAN),)
	CERTBOT_WAZO_BUILD_ONLY=1 CERTBOT_WAZO_DEB_DIR=$(CURDIR)/dist bash .ci/package
else
	/usr/bin/python3 -m tests.platforms.matrix --deb --out $(CURDIR)/dist/$(DEBIAN) $(DEBIAN)
endif

# Renewal figures on the sandbox (both generations): BENCH_ARGS="--runs 10" for more runs. Then
# certbot-wazo side by side with certbot --nginx on a release's host (its own network and mount
# namespaces): VERSUS_ARGS="--runs 5" for more runs.
bench: bootstrap
	$(PYTHON_NEW) -m tests.bench.renewal $(BENCH_ARGS)
	$(PYTHON_NEW) -m tests.bench.versus_nginx $(VERSUS_ARGS)

clean:
	rm -rf .venv .venv-debian build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache mutants
