"""JOSH turn-level beam search: the tree model, the step-wise search and derived labels."""

from josh_core.search.engine import JoshSearch, SearchConfig, StepEvent, TreeSink
from josh_core.search.labels import LABELS, Label, compute_labels, ideal_path
from josh_core.search.tree import ConversationTree, Node, RewardEvent, derive_seed

__all__ = [
    "JoshSearch", "SearchConfig", "StepEvent", "TreeSink", "LABELS", "Label", "compute_labels",
    "ideal_path", "ConversationTree", "Node", "RewardEvent", "derive_seed",
]
