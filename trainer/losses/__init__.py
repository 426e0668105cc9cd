"""Losses over projected features: ``registry`` (``make_loss``), ``infonce`` (:class:`BindLoss`),
``cyclip`` (cycle-consistency terms) and ``gather`` (features across ranks)."""
