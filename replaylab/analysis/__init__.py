"""Reading finished runs: aggregate them with rliable, plot them.

- :mod:`replaylab.analysis.aggregate` reads run directories into records and computes the
  interquartile mean (IQM) with stratified-bootstrap confidence intervals;
- :mod:`replaylab.analysis.plot` draws the learning curves;
- :mod:`replaylab.analysis.report` puts both, and more, on one HTML page (``replaylab report``).

The grid runner on top of these and of training is :mod:`replaylab.compare`.
"""

from replaylab.analysis.aggregate import RunRecord, aggregate, find_run_dirs, load_runs

__all__ = ["RunRecord", "aggregate", "find_run_dirs", "load_runs"]
