"""Evaluation: fusion quality metrics (``metrics``), the evaluation runner and its report."""
