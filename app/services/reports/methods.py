"""The ``methods`` section: what was used, how, and from which runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from app.services import monitors
from app.services.reports.context import DISTRICT_LEVEL, _Context, _day
from reports.document import Section, short_version


async def _methods(ctx: _Context, version: int, data: int) -> Section:
    d = ctx.definition
    p = ctx.period
    notes = [
        ctx.t(
            f"Report definition {d.name}, version {version} ({d.audience} audience), "
            f"period {p.label} ({p.start.date()} to {(p.end - timedelta(days=1)).date()}, "
            f"{ctx.settings.territory.timezone}); data version {short_version(data)} "
            f"({data}).",
            f"Definición del informe {d.name}, versión {version} (edición "
            f"{'pública' if ctx.public else 'para analistas'}), periodo {p.label} "
            f"({ctx.lang.date_range(p.start.date(), p.end.date() - timedelta(days=1))}, "
            f"{ctx.settings.territory.timezone}); versión de los datos {short_version(data)} "
            f"({data}).",
        )
    ]
    measures = "; ".join(
        f"{ctx.name(m)} = "
        + (
            ctx.words(m.categories)
            if m.categories
            else ctx.t("group ", "grupo ") + ctx.lang.term(m.category_group).lower()
        )
        for m in d.measures
    )
    notes.append(ctx.t(f"Measures: {measures}.", f"Medidas: {measures}."))
    notes.append(
        ctx.t(
            "Counts are incidents (not victims), cut by the local date of occurrence; rates "
            "per 100,000 residents use the census population of the matching unit, sex and "
            "age group (the latest census year before the period, else the nearest after).",
            "Los conteos son incidentes (no víctimas), según la fecha local del hecho; las "
            "tasas por 100 000 habitantes usan la población censal de la unidad, sexo y grupo "
            "de edad correspondientes (el último censo anterior al periodo; si no lo hay, el "
            "más cercano posterior).",
        )
    )
    if ctx.public:
        notes.append(
            ctx.t(
                "Disclosure control: every figure is the one /stats, /rankings and /alerts give "
                "a caller without a key. Counts are perturbed by -2 to +2 (cell key method), "
                f"counts below {ctx.settings.privacy.min_count} and sensitive categories "
                f"({', '.join(sorted(ctx.sensitive))}) are withheld, as are the cells that "
                "would let a withheld count be recomputed; a withheld figure is left blank. "
                "Changes are computed from the published counts.",
                "Control de divulgación: cada cifra es la que /stats, /rankings y /alerts dan "
                "a un usuario sin clave. Los conteos se perturban de -2 a +2 (método de clave "
                f"de celda); los menores de {ctx.settings.privacy.min_count} y las categorías "
                f"sensibles ({', '.join(sorted(ctx.sensitive))}) se omiten, igual que las "
                "celdas que permitirían recalcularlos; una cifra omitida queda en blanco.",
            )
        )
    else:
        notes.append(
            ctx.t(
                "Analyst report: exact counts, sensitive categories included. Not for publication.",
                "Informe para analistas: conteos exactos, categorías sensibles incluidas. No "
                "publicar.",
            )
        )
    for monitor in await monitors.list_definitions(ctx.conn, include_sensitive=not ctx.public):
        md = monitor.definition
        det = md.get("detector", {})
        parameters = _pairs(ctx, det.get("parameters", {}))
        if not ctx.es:
            notes.append(
                f"Monitor {monitor.title} (version {monitor.version}): detector "
                f"{det.get('name')} ({parameters}), per {md.get('step')}, "
                f"no alert below {md.get('min_count')} incidents."
            )
            continue
        # Spanish: the monitor's Spanish title, and what it counts from its definition.
        chosen = md.get("incidents") or {}
        what = ctx.words([*chosen.get("categories", []), *chosen.get("category_groups", [])])
        places = md.get("places") or {}
        where = (
            f"celdas H3 de resolución {places.get('resolution')}"
            if places.get("kind") == "h3"
            else "distrito"
            if places.get("level") == DISTRICT_LEVEL
            else "unidad"
        )
        step = {"week": "semanal", "month": "mensual"}.get(md.get("step"), md.get("step"))
        notes.append(
            f"Monitor {ctx.title(md, monitor.code)} (versión {monitor.version}): "
            f"{what or 'todos los delitos'} "
            f"por {where}, serie {step}; detector {det.get('name')} ({parameters}); sin "
            f"alerta por debajo de {md.get('min_count')} incidentes."
        )
    notes += ctx.notes
    return Section("methods", notes=notes)


def _pairs(ctx: _Context, parameters: dict) -> str:
    """``{"b": 3, "trend": True, "limit54": [3, 4]}`` → ``b=3, trend=yes, limit54=3 4``
    (a detector's parameters by their names, values in the report's language)."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return ctx.t("yes", "sí") if v else "no"
        if isinstance(v, list | tuple):
            return " ".join(value(x) for x in v)
        return ctx.lang.decimal(v, 2) if isinstance(v, float) else str(v)

    text = ", ".join(f"{k}={value(v)}" for k, v in parameters.items())
    return text or ctx.t("defaults", "valores por defecto")


def _run_note(ctx: _Context, run: Any) -> str:
    """The hot spot run of the map in one sentence: method, cells, incidents, test."""
    p = run.parameters or {}
    f = p.get("filters") or {}
    units = p.get("units") or {}
    cells = (
        f"H3 {ctx.t('resolution', 'resolución')} {units.get('resolution')}"
        if units.get("type") == "h3"
        else f"{units.get('type')} {units.get('cell_size_m') or units.get('level') or ''}".strip()
    )
    categories = ctx.words(f.get("categories") or []) or ctx.t("all categories", "todas")
    to = ctx.t(" to ", " a ")
    since, until = _day(ctx, f.get("occurred_from")), _day(ctx, f.get("occurred_to"), True)
    span = f"{since or '…'}{to}{until or '…'}"
    fdr = ctx.t("with", "con") if p.get("fdr") else ctx.t("without", "sin")
    return ctx.t(
        f"Hot spot map: analysis run {run.id}, {run.method} on {cells} cells, {categories}, "
        f"{span}, alpha {p.get('alpha')} {fdr} false discovery rate correction.",
        f"Mapa de puntos calientes: análisis {run.id}, {run.method} en celdas {cells}, "
        f"{categories}, {span}, alfa {p.get('alpha')} {fdr} corrección de la tasa de "
        "falsos descubrimientos.",
    )
