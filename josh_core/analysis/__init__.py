"""Metrics and error analysis of stored conversations (paper sections 4.1 and 5.2).

    conversations.load_conversations(db, run_id=None, nodes="ideal") -> LoadedConversations
    metrics.summarize / per_domain / per_api / bootstrap / metrics_report
    errors.error_rates / conversation_errors / errors_per_api / parameter_errors / error_report
    leaderboard.leaderboard(db) -> DataFrame, one row per stored evaluation
    bootstrap.bootstrap_std(scores, sizes, resamples, seed) -> DataFrame (Figure 3c)

The CLI (`josh eval | metrics | errors | leaderboard`) and the app call these same functions.
"""
