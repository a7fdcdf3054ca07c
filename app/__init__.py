"""numatop-llm application: sampler, state, diagnoses, planner, launcher, CLI and screens."""

__version__ = "0.1.0"
