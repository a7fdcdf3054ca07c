"""The ``?`` screen: every key, and what the views mean."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]numatop-llm[/b] — where a vLLM CPU engine's threads and memory live, per NUMA node

[b]Views[/b]
  1  Overview    NUMA map (sockets → nodes → CPUs), node memory bars, diagnoses
  2  Processes   the engine tree; Enter on a process shows its threads
  3  Memory      used memory per node over time, the engine's bytes per node
  w  What-if     edit TP/PP/bind/KV and the machine (ctrl+n), see verdicts, relaunch

[b]Keys[/b]
  p  pause / resume sampling          + / -  slower / faster refresh
  d  distances table in the map       r      re-discover engines
  s  sort threads (CPU% TID CPU node) /      filter processes and threads
  ?  this help                        q      quit
  Esc closes a dialog or the filter

[b]NUMA map[/b]  a cell per CPU: [b]0 1 2…[/b] a worker rank's threads ran there last,
  [b]E[/b] engine core, [b]A[/b] API server, else load ·▁▂▃▄▅▆▇█; the background shows load.
  Right: how full the node is. Wide nodes are drawn compact (1 cell = several CPUs).
[b]Node memory[/b]  rank characters = this engine's bytes on the node, ▒ other use, ░ free.
  [b]OOM[/b] the planner says a strictly bound rank will not fit; [b]FULL[/b] < 5% available.
[b]Threads[/b]  red rows run off their process's home node (its bind node, else where most run).

Not root? Other users' /proc/PID/numa_maps and environ are unreadable: the views say so.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 96; height: 90%; border: round $accent; padding: 0 1;
        background: $panel; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(HELP)
