"""JOSH Workbench engine: ToolWOZ environment, turn-level beam search, policies, backends,
storage, extraction, training and analysis. Nothing in here imports Streamlit."""

__version__ = "0.1.0"
