# The two commands (see README.md):
#   make demo   run the main job
#   make test   run the whole test suite (what CI runs)
# Both install what is missing and build the guest kernel once (cached).

CARGO ?= cargo

.PHONY: demo test deps kernel lint

demo: deps kernel
	$(CARGO) run --quiet --release -p vessel-integration --example demo

test: deps kernel lint
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings

deps:
	.ci/install-deps

# Prints the kernel path; a cache hit takes well under a second.
kernel: deps
	kernel-config/build.sh
