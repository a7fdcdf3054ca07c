"""``python -m numatop_llm``: the same command as ``numatop-llm``."""

import sys

from numatop_llm.commands.cli import main

sys.exit(main())
