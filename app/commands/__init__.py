"""The ``numatop-llm`` subcommands: one module each, all registered by :mod:`.cli`."""
