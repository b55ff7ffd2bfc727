"""DuckDB analysis of the result store: views, read-only SQL, the Rethinking-vs-LTH
comparison, paper tables and plots, the report."""

from analysis.views import connect

__all__ = ["connect"]
