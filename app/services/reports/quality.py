"""The ``quality`` section: how complete and well placed the period's data are."""

from __future__ import annotations

import pandas as pd

from app.core.errors import NotFound
from app.services.reports.context import DISTRICT_LEVEL, _Context
from app.sql import reports as sql
from reports.document import Section


async def _quality(ctx: _Context) -> Section:
    p = ctx.period
    found = (await ctx.conn.execute(sql.georeferenced(p.start, p.end, DISTRICT_LEVEL))).all()
    geo = pd.DataFrame.from_records(
        [
            {
                "source": r.source,
                "unit_name": r.unit_name or ctx.t("(no district)", "(sin distrito)"),
                "incidents": float(r.incidents),
                "georeferenced": float(r.georeferenced),
            }
            for r in found
        ],
        columns=["source", "unit_name", "incidents", "georeferenced"],
    )
    if ctx.public:
        # No counts and no source breakdown (a public table has neither: a district's
        # count of every category would give its sensitive ones away): whole percentages
        # per district over every source.
        geo = geo.groupby("unit_name", as_index=False)[["incidents", "georeferenced"]].sum()
    geo["georeferenced_pct"] = (geo["georeferenced"] / geo["incidents"] * 100).round(
        0 if ctx.public else 1
    )
    if ctx.public:
        geo = geo[["unit_name", "georeferenced_pct"]]
    else:
        geo = geo[["source", "unit_name", "incidents", "georeferenced_pct"]]
    rejected = pd.DataFrame.from_records(
        [
            {"batch_id": r.batch_id, "reason": r.reason, "rows": float(r.rows)}
            for r in (await ctx.conn.execute(sql.rejected(p.start, p.end))).all()
        ],
        columns=["batch_id", "reason", "rows"],
    )
    delays = (await ctx.conn.execute(sql.delay(p.start, p.end, by_source=not ctx.public))).all()
    delay = pd.DataFrame.from_records(
        [
            {
                "source": r.source if not ctx.public else ctx.t("all sources", "todas las fuentes"),
                "median_days": round(float(r.median_days), 1),
                "p90_days": round(float(r.p90_days), 1),
            }
            for r in delays
        ],
        columns=["source", "median_days", "p90_days"],
    )
    section = Section(
        "quality", tables={"georeferenced": geo, "rejected": rejected, "delay": delay}
    )
    if not ctx.public:  # GET /quality is for analysts: the public report leaves it out
        # Imported here: the death records' modules bring GDAL's reader (~30 MiB) that a
        # public report does not need.
        from app.services import quality

        section.tables["sources"] = await _death_sources(ctx)
        section.notes.append(
            ctx.t(
                "Death records by agency (the scorecard of GET /quality): completeness is the "
                "mean share of the scored fields; timely: registered within "
                f"{quality.TIMELY_DAYS} days of the death; linked: matched to another "
                "agency's record of the same death; same manner: of those, the share where "
                "the agencies record the same manner of death.",
                "Registros de defunciones por institución (la ficha de GET /quality): la "
                "completitud es la proporción media de los campos evaluados; a tiempo: "
                f"registrados dentro de los {quality.TIMELY_DAYS} días de la muerte; "
                "enlazados: con un registro de otra institución de la misma muerte; misma "
                "manera: entre estos, la proporción con la misma manera de muerte.",
            )
        )
    precise = " / ".join(sql.GEOREFERENCED)
    if ctx.es:  # the import's precision codes, as the Spanish reader says them
        precise = " / ".join(
            {"exact": "exacta", "street": "calle"}.get(c, c) for c in sql.GEOREFERENCED
        )
    section.notes.append(
        ctx.t(
            f"Georeferenced: located at an address or a street (location precision {precise}), "
            "the rest at a town or district centre. Rejected rows: the rows the imports of the "
            "period's incidents refused, by reason (quoted values left out). Reporting delay: "
            "days from occurrence to report.",
            f"Georreferenciados: ubicados en una dirección o calle (precisión {precise}); el "
            "resto en el centro de una localidad o distrito. Filas rechazadas: las que las "
            "importaciones de los incidentes del periodo rechazaron, por motivo. Demora de "
            "denuncia: días desde el hecho hasta la denuncia.",
        )
    )
    return section


async def _death_sources(ctx: _Context) -> pd.DataFrame:
    """Each agency's death-records scorecard for the period (issue 21), the numbers of
    ``GET /quality`` for the same period and its default (latest) linkage run, in %."""
    from app.services import linkage, quality

    try:
        run_id: int | None = await linkage.require_run(ctx.conn, None)
    except NotFound:
        run_id = None  # no linkage run yet: coherence is unknown, as /quality says
    p = ctx.period
    scores = await quality.quality(
        ctx.conn, p.start.date(), p.end.date(), run_id, tuple(ctx.settings.linkage.sources)
    )

    def pct(share: float | None) -> float | None:
        return None if share is None else round(share * 100, 1)

    records = []
    for s in scores:
        shares = [v for v in s.completeness.values() if v is not None]
        records.append(
            {
                "source": s.source,
                "records": float(s.records),
                "completeness_pct": pct(sum(shares) / len(shares)) if shares else None,
                "georeferenced_pct": pct(s.georeferenced),
                "timely_pct": pct(s.timeliness.get(f"within_{quality.TIMELY_DAYS}_days")),
                "median_delay_days": s.timeliness.get("median_days"),
                "linked_pct": pct(s.coherence.get("linked")),
                "same_manner_pct": pct(s.coherence.get("same_manner")),
            }
        )
    columns = ["source", "records", "completeness_pct", "georeferenced_pct", "timely_pct",
               "median_delay_days", "linked_pct", "same_manner_pct"]  # fmt: skip
    return pd.DataFrame.from_records(records, columns=columns)
