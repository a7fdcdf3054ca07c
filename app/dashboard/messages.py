"""Messages from the sampler's thread to the dashboard (small dataclasses, newest wins when safe)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from numatop_llm.monitor.session import MonitorSample


@dataclass
class SampleArrived(Message):
    """A new sample from the monitoring session ``generation`` (older generations are ignored)."""

    sample: MonitorSample
    generation: int
    #: live samples may collapse; a replay's every sample is part of the story (history, kills)
    live: bool = True

    def can_replace(self, message: Message) -> bool:
        # a burst of live samples (the UI was busy) collapses to the newest, unless the older one
        # carries an event the state must see: a kill, an engine that exited, a re-discovery's result
        if not (self.live and isinstance(message, SampleArrived) and message.generation == self.generation):
            return False
        old = message.sample
        return (
            not old.engine_kills
            and old.lost_pid is None
            and old.candidates is None
            and ((old.snapshot.engine is None) == (self.sample.snapshot.engine is None))
        )


@dataclass
class ReplayEnded(Message):
    """The recording being replayed has no more samples."""

    generation: int


@dataclass
class SourceFailed(Message):
    """A sample failed; one line for the operator."""

    reason: str
