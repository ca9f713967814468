"""The spine every caller shares: candidates, capacity, the selection rule and features."""

from andes_gym.core.candidates import Candidates, Capacity, make_candidates
from andes_gym.core.selection import Decision, InvalidDecision, check_decision, select

__all__ = [
    "Candidates",
    "Capacity",
    "Decision",
    "InvalidDecision",
    "check_decision",
    "make_candidates",
    "select",
]
