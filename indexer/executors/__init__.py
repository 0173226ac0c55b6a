"""Executors for the indexing runner (indexer/runner.py): where the stages run."""
