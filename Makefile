# The two commands (see README.md):
#   make demo   run the main job
#   make test   run the whole test suite (what CI runs)
# Both install what is missing and build the guest kernel once (cached).

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
CARGO ?= cargo
# Seconds each fuzz target runs in `make test` (longer: make fuzz FUZZ_SECONDS=600).
FUZZ_SECONDS ?= 15
FUZZ_TARGETS = virtio_mmio rng_queue vsock_packet virtio_fs snapshot_state port_io config_space

.PHONY: demo test deps kernel lint fuzz bench agent-initramfs

demo: deps kernel
	$(CARGO) run --quiet --release -p vessel-integration --example demo

test: deps kernel lint fuzz
	.ci/cargo-test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings

# Bounded coverage-guided runs of every guest-input fuzz target. cargo fuzz
# wants nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
fuzz: deps
	cd vmm/fuzz && for t in $(FUZZ_TARGETS); do \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 \
	    2>&1 | tail -n 3 || exit 1; \
	done

# vessel-vmm against qemu-system-x86_64 -M microvm, side by side, then vsock
# throughput host <-> guest, then a container's start in the guest against
# runc on the host and a stdin stream through a container, then a restore
# from a snapshot against a boot, then file workloads on virtio-fs against
# the host, then `ctr run --rm` with the vessel runtime against runc and a
# pod's memory (see README).
bench: deps kernel
	$(CARGO) run --quiet --release -p vessel-integration --example bench_vmm
	$(CARGO) run --quiet --release -p vessel-integration --example bench_vsock
	$(CARGO) run --quiet --release -p vessel-integration --example bench_container
	$(CARGO) run --quiet --release -p vessel-integration --example bench_snapshot
	$(CARGO) run --quiet --release -p vessel-integration --example bench_fs
	$(CARGO) run --quiet --release -p vessel-integration --example bench_shim

# The guest agent, static, packed as /init; prints the initramfs path
# (the same build and cache the integration harness uses).
agent-initramfs:
	RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
	  CARGO_TARGET_DIR=target/guest $(CARGO) build --quiet --release \
	  --target x86_64-unknown-linux-gnu -p vessel-agent
	$(CARGO) run --quiet -p vessel-initramfs -- \
	  --init target/guest/x86_64-unknown-linux-gnu/release/vessel-agent \
	  --cache $${VESSEL_CACHE_DIR:-$$HOME/.cache/vessel}/initramfs

deps:
	.ci/install-deps

# Prints the kernel path; a cache hit takes well under a second.
kernel: deps
	kernel-config/build.sh
