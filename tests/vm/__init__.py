"""QEMU guests with real multi-NUMA Linux kernels for the test suite (see harness.py, build.sh)."""
