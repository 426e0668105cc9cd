"""BrokenBind (METHODS.md section 4): bind two modalities that never co-occur, through a pivot.

* :mod:`~trainer.bridge.splits`: which keys form D1 (a + pivot), D2 (c + pivot) and the
  evaluation items (a + c, never used in bridge or train);
* :mod:`~trainer.bridge.ridge`: float64 ridge from sufficient statistics, lambda by k-fold CV;
* :mod:`~trainer.bridge.neighbors`: the sample-space route over each item's k nearest pivots;
* :mod:`~trainer.bridge.transitions`: the two MOX routes (cross-modal, cross-dataset) and R^2;
* :mod:`~trainer.bridge.stage`: ``bindery bridge``, the pseudo stores under ``bridge/<name>/``;
* :mod:`~trainer.bridge.data`, :mod:`~trainer.bridge.loss`: ``train.bridge`` (rows, MOX + CyCLIP);
* :mod:`~trainer.bridge.evaluate`: the ``bridge`` section of ``metrics.json``.
"""
