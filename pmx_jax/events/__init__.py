"""NONMEM (PREDPP) dosing-event semantics shared by every dynamics."""

from ._engine import EngineResult as EngineResult
from ._engine import record_amounts as record_amounts
from ._plan import EventPlan as EventPlan
from ._plan import plan_events as plan_events
