"""The ``index`` section: the published ranking of the composite index."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd

from app.core.errors import ProblemError
from app.services import indexes as index_service
from app.services import rankings
from app.services.periods import period_containing, previous_period
from app.services.reports.context import PUBLISHER, _Context
from reports.document import Section


def _index_period(ctx: _Context, kind: str) -> str:
    """The index's latest period of ``kind`` that ended by the report period's end."""
    tz = ctx.settings.territory.timezone
    last = period_containing(ctx.period.end - timedelta(microseconds=1), kind, tz)
    if last.end > ctx.period.end:
        last = previous_period(last, tz)
    return last.label


async def _index(ctx: _Context) -> Section:
    code = ctx.definition.index
    if code is None:
        return Section("index", empty=ctx.t("No index in this report.", "Sin índice."))
    try:
        record = await index_service.get_definition(ctx.conn, code)
        kind = record.definition.get("period", "year")
        label = _index_period(ctx, kind)
        # Ranks only: map classes would import mapclassify (~90 MiB of numba kernels).
        ranking = await rankings.compute_ranking(
            ctx.conn, ctx.settings, PUBLISHER, code, label, reader=ctx.who, map_classes=False
        )
    except ProblemError as exc:
        return Section(
            "index",
            empty=ctx.t(f"The index could not be computed: {exc.detail}", f"El índice no "
                        f"pudo calcularse: {exc.detail}"),
        )  # fmt: skip
    table = pd.DataFrame.from_records(
        [
            {
                "rank": r.rank,
                "unit_code": r.unit_code,
                "unit_name": r.unit_name,
                "score": r.score,
                "band": r.ranks,
            }
            for r in ranking.rows
        ],
        columns=["rank", "unit_code", "unit_name", "score", "band"],
    )
    section = Section("index", tables={"ranking": table})
    title = ctx.title(record.definition, ranking.title)
    ties = " ".join(ranking.ties) if not ctx.es else _ties_es(table)
    section.notes.append(
        ctx.t(
            f"{title} (version {ranking.version}), {ranking.period}. {ties}",
            f"{title} (versión {ranking.version}), {ranking.period}. {ties}",
        ).strip()
    )
    ctx.notes.append(
        ctx.t(
            f"Index: {title}, version {ranking.version}, period {ranking.period}; "
            f"rank bands from {ranking.runs} Monte Carlo runs (seed {ranking.seed}); "
            f"{ranking.treatment.rule}",
            f"Índice: {title}, versión {ranking.version}, periodo {ranking.period}; "
            f"bandas de rango de {ranking.runs} simulaciones Monte Carlo (semilla "
            f"{ranking.seed}); {_treatment_es(ranking.treatment)}",
        )
    )
    return section


DASH = "\u2013"


def _ties_es(table: pd.DataFrame) -> str:
    """The ranking's ties in Spanish, from its bands (rankings words them in English)."""
    out = []
    for band, rows in table.groupby("band", sort=False):
        if len(rows) > 1:
            names = list(rows["unit_name"])
            who = ", ".join(names[:-1]) + " y " + names[-1]
            out.append(
                f"{who} comparten los puestos {band}: sus bandas de rango (5{DASH}95 %) se solapan "
                "y los datos no permiten ordenarlos."
            )
    return " ".join(out) or "Ninguna banda de rango se solapa: los datos ordenan cada unidad."


def _treatment_es(treatment: Any) -> str:
    """Which outlier rule applied, in Spanish (from the statement's fields)."""
    if treatment.method == "none":
        return "sin tratamiento de valores atípicos: la definición no lo pide."
    if treatment.applied:
        return (
            "valores atípicos tratados con la regla del JRC (asimetría y curtosis altas: "
            f"winsorización, si no logaritmo): {treatment.units} unidades, la regla necesita "
            f"{treatment.min_units}."
        )
    return (
        "sin tratamiento de valores atípicos: la regla del JRC no se aplica a "
        f"{treatment.units} unidades, menos de las {treatment.min_units} que necesita para "
        "distinguir un valor atípico de una unidad que simplemente se aparta; cada valor se "
        "usa tal como se midió."
    )
