"""Textual widgets of numatop-llm: they render snapshots and plans they are given, and never read /proc."""
