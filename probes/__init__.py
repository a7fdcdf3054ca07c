"""Readers of /proc, /sys and cgroup files that turn machine state into frozen snapshots.

Nothing in this package imports Textual; every reader takes its roots as a parameter.
"""
