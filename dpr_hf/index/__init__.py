"""The passage index: passages and a FAISS inner-product index over their vectors, saved as one folder; and the
planner that picks its factory for a corpus size, a dimension and a memory budget."""

from .passage_index import PassageIndex
from .planner import IndexPlan, PlanError, check_free_disk, plan_index

__all__ = ["IndexPlan", "PassageIndex", "PlanError", "check_free_disk", "plan_index"]
