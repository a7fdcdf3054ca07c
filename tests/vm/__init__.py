"""QEMU guests with real multi-NUMA Linux kernels for the test suite.

- ``build.sh``: installs QEMU/busybox/numactl if missing, caches a Debian 12 kernel and a busybox
  initramfs (``init.sh``) under ``${NUMATOP_CACHE:-~/.cache/numatop-llm}/vm``.
- ``layouts.py``: ``seed8``, ``uneven4``, ``two-node`` as QEMU ``-numa`` arguments.
- ``harness.py``: ``NumaVm.run(layout, command, timeout) -> GuestResult``; ``python -m
  tests.vm.harness LAYOUT COMMAND`` runs one command by hand.
- ``fixtures.py``: the session fixture ``numa_vm``.
- Guest-side helpers: ``hog.py`` (a rank's memory and threads), ``story.py`` (the scaled seed
  story), ``bin/vllm`` (a vLLM-shaped process tree).
"""
