"""The open alerts' small multiples: which alerts get a panel, in which order."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.charts import MAX_ALERT_PANELS, alert_series, chosen_alerts
from reports.i18n import Lang


def _alerts(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "alert_id": range(1, n + 1),
            "place": [f"Place {i}" for i in range(1, n + 1)],
            "period": ["2025-06"] * n,
            "observed": [10.0 + i for i in range(n)],
            "threshold": [10.0] * n,
        }
    )


def _series(ids: list[int], withheld: set[int] = frozenset()) -> pd.DataFrame:
    periods = [f"2025-{m:02d}" for m in range(1, 7)]
    return pd.DataFrame(
        [
            {"alert_id": a, "period": p, "observed": np.nan if a in withheld else 5.0 + i,
             "expected": 5.0, "threshold": 9.0, "alarm": i == 5}
            for a in ids
            for i, p in enumerate(periods)
        ]
    )  # fmt: skip


def test_the_strongest_alerts_come_first_and_at_most_six():
    alerts = _alerts(8)
    alerts.loc[alerts["alert_id"] == 2, "observed"] = np.nan  # withheld: last
    chosen = chosen_alerts(alerts)
    assert len(chosen) == MAX_ALERT_PANELS
    assert chosen == [8, 7, 6, 5, 4, 3]  # observed/threshold 1.7 down to 1.2


def test_an_alert_with_its_counts_withheld_gets_no_panel():
    alerts = _alerts(2)
    svg = alert_series(_series([1, 2], withheld={2}), alerts, Lang("en"))
    assert "Alert 1: Place 1" in svg and "Place 2" not in svg
    assert alert_series(_series([1, 2], withheld={1, 2}), alerts, Lang("en")) == ""
    spanish = alert_series(_series([1, 2]), alerts, Lang("es"))
    assert "Alerta 2: Place 2" in spanish and "Umbral" in spanish
