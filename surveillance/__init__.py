"""Early-warning detectors for count series (issue 19): pure functions, no database.

Each detector matches its R surveillance 1.20 counterpart on the reference series in
tests/data/surveillance (thresholds to 1e-6, alarms exactly):

- :func:`surveillance.ears.ears` — EARS C1, C2, C3 (``earsC``)
- :func:`surveillance.farrington.farrington_flexible` — ``farringtonFlexible``
- :func:`surveillance.glrnb.glrnb` — negative-binomial / Poisson GLR CUSUM (``glrnb``)

plus the Knox test for near repeat (:func:`surveillance.knox.knox_bands`) and an
evaluation on planted outbreaks (:mod:`surveillance.evaluation`). This package never
imports ``app``.
"""
