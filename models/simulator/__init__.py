"""The dispatch history simulator: a city's 12345/digital-city-management archive, generated
from the domain file (report texts in the styles people write, and the unit that handled
each). It feeds model training and the live demo stream.

    from models.simulator import generate_history, history_to_json, to_wire
"""

from __future__ import annotations

from models.simulator.generator import (
    CHANNELS,
    HistoryRecord,
    Simulator,
    SimulatorError,
    generate_history,
    history_from_json,
    history_to_json,
    to_wire,
)
from models.simulator.phrasing import STYLES

__all__ = [
    "CHANNELS",
    "STYLES",
    "HistoryRecord",
    "Simulator",
    "SimulatorError",
    "generate_history",
    "history_from_json",
    "history_to_json",
    "to_wire",
]
