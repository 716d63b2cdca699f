"""The category vocabulary: codes, names, groups and sensitive flags.

One code path for every door: ``observatory import categories FILE``, ``POST /categories``
(CSV or JSON) and the demo all read rows into the same records, check every row the same
way and save them with :func:`save_categories`:

- A vocabulary is all or nothing. Every row is checked first; if any is invalid, nothing
  is written and the error lists every rejected row with all its reasons.
- Saving *upserts* by code: new codes are added, existing ones take the new name, group,
  sensitive flag and description, and codes missing from the file are kept. With
  ``replace`` the codes missing from the file are deleted, but only if no incident uses
  them (soft-deleted incidents included): otherwise nothing is written and the 409 names
  each used code with its number of incidents. A code is never renamed (that would be a
  delete and an insert).
- Changing a used category is allowed and takes effect at once: a category flagged
  sensitive is withheld from public statistics from then on, its incidents keep the code.
- Each save that changes something is a new *version* of the vocabulary: one audit entry
  (entity ``category_vocabulary``, entity id the version number) holds the whole
  vocabulary before and after, so any past version can be rebuilt from ``GET /audit``.
  A save that changes nothing writes no version.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.errors import Conflict, InvalidFile
from app.sql import audit as audit_sql
from app.sql import categories as sql

__all__ = [
    "CategoryReport",
    "list_categories",
    "load_categories",
    "parse_categories",
    "read_categories_csv",
    "read_categories_json",
    "save_categories",
]

REQUIRED = ("code", "name", "category_group", "sensitive")
OPTIONAL = ("description",)
COLUMNS = (*REQUIRED, *OPTIONAL)
# Codes and groups travel in URLs, comma-separated lists and CQL2 filters: keep them plain.
CODE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
TRUE = frozenset({"true", "1", "yes"})
FALSE = frozenset({"false", "0", "no"})
# Keys of a JSON vocabulary object: what GET /categories answers.
JSON_KEYS = frozenset({"categories", "version", "links"})
MAX_NAME = 200
MAX_DESCRIPTION = 2_000


@dataclass(frozen=True)
class CategoryReport:
    """What a save did: codes inserted, updated, deleted (``replace``), and kept as they
    were; ``version`` is the vocabulary's version afterwards (unchanged if nothing
    changed)."""

    version: int
    received: int
    inserted: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # stored, not in the file, left alone


# -- reading -------------------------------------------------------------------------------


def read_categories_csv(data: bytes | str, name: str = "categories.csv") -> list[dict[str, Any]]:
    """The rows of a vocabulary CSV (UTF-8, a header with the :data:`COLUMNS`), as
    records for :func:`parse_categories`. A header lacking a required column or naming
    an unknown one is a 422."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidFile(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        reader = csv.DictReader(io.StringIO(data, newline=""), skipinitialspace=True)
        header = [(h or "").strip().lower() for h in reader.fieldnames or []]
        reader.fieldnames = header
        rows = [dict(r) for r in reader]
    except csv.Error as exc:
        raise InvalidFile(f"{name}: cannot parse the CSV file ({exc})") from exc
    if not header:
        raise InvalidFile(f"{name}: the file is empty")
    _check_columns(name, header)
    for row in rows:
        if None in row:  # more cells than header names
            row.pop(None)
            row["_extra"] = "1"
    return rows


def read_categories_json(
    body: Any, name: str = "request body"
) -> tuple[list[dict[str, Any]], int | None]:
    """Records from a JSON vocabulary, and the version it was edited from (if given).

    The body is a list of objects, or an object ``{"categories": [...], "version": n}``
    as ``GET /categories`` answers (its ``links`` are ignored; ``version`` optional).
    Each category object has the :data:`COLUMNS` as keys (``sensitive`` a boolean or
    its text)."""
    version = None
    if isinstance(body, Mapping) and "categories" in body and set(body) <= JSON_KEYS:
        version = body.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise InvalidFile(f"{name}: version must be a whole number (got {version!r})")
        body = body["categories"]
    if not isinstance(body, list):
        raise InvalidFile(
            f'{name}: expected a list of categories or {{"categories": [...]}}, each an '
            f"object with {', '.join(COLUMNS)}"
        )
    return [dict(r) if isinstance(r, Mapping) else {"_not_object": r} for r in body], version


async def load_categories(
    engine: AsyncEngine, path: Path, *, actor: str = "system", replace: bool = False
) -> CategoryReport:
    """Read a vocabulary CSV file and save it (the CLI's and the demo's door)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidFile(f"{path.name}: cannot read the file ({exc.strerror})") from exc
    rows = parse_categories(read_categories_csv(data, path.name), path.name)
    return await save_categories(engine, rows, actor=actor, replace=replace, source=path.name)


def _check_columns(name: str, header: list[str]) -> None:
    missing = [c for c in REQUIRED if c not in header]
    unknown = [h for h in header if h not in COLUMNS]
    repeated = sorted({h for h in header if header.count(h) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s) {', '.join(map(repr, unknown))}")
    if repeated:
        problems.append(f"repeated column(s) {', '.join(repeated)}")
    if problems:
        raise InvalidFile(
            f"{name}: {'; '.join(problems)}; the columns are {', '.join(COLUMNS)} "
            "(description optional)",
            required=list(REQUIRED),
            optional=list(OPTIONAL),
        )


# -- checking ------------------------------------------------------------------------------


def parse_categories(records: Iterable[Mapping[str, Any]], name: str) -> list[dict[str, Any]]:
    """Check every record; return the vocabulary's rows (code lower-cased, ``sensitive``
    a boolean, ``description`` '' when absent).

    Raises ``InvalidFile`` (422) listing every rejected row as ``{row, code, reason}``
    (row 1 = first data row; all of a row's reasons joined by "; ") when any row is
    invalid, or when there is no row at all: nothing is saved then.
    """
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    seen_codes: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    records = list(records)
    for number, record in enumerate(records, start=1):
        row, reasons = _parse_row(record)
        reasons += _repeats(row, number, seen_codes, seen_names)
        if reasons:
            shown = _text(record.get("code")) or None  # as the caller wrote it
            rejected.append({"row": number, "code": shown, "reason": "; ".join(reasons)})
            continue
        rows.append(row)
    rejected += _names_that_are_codes(rows, seen_codes, seen_names)
    if not records:
        raise InvalidFile(f"{name}: no categories")
    if rejected:
        rejected.sort(key=lambda r: r["row"])
        raise InvalidFile(
            f"{name}: {len(rejected)} invalid row(s) of {len(records)}; nothing was saved",
            rows=rejected,
            invalid=len(rejected),
        )
    return rows


def _repeats(
    row: dict[str, Any], number: int, seen_codes: dict[str, int], seen_names: dict[str, int]
) -> list[str]:
    """Why row ``number`` repeats an earlier row's code or name; notes its own in the
    ``seen_`` maps (code or lower-cased name → first row)."""
    reasons = []
    code, alias = row.get("code"), (row.get("name") or "").lower()
    if code and code in seen_codes:
        reasons.append(f"duplicate of row {seen_codes[code]} (same code)")
    if alias and alias in seen_names:
        reasons.append(f"same name as row {seen_names[alias]} (names must be unique)")
    # The first row of a code or name is the one later rows repeat, valid or not.
    if code:
        seen_codes.setdefault(code, number)
    if alias:
        seen_names.setdefault(alias, number)
    return reasons


def _names_that_are_codes(
    rows: list[dict[str, Any]], seen_codes: dict[str, int], seen_names: dict[str, int]
) -> list[dict[str, Any]]:
    """The rejections of valid rows whose name is another row's code: a name is also read
    as its category in incident files."""
    rejected = []
    for row in rows:
        alias = row["name"].lower()
        if alias != row["code"] and alias in seen_codes:
            rejected.append(
                {
                    "row": seen_names[alias],
                    "code": row["code"],
                    "reason": f"name {row['name']!r} is the code of row {seen_codes[alias]}",
                }
            )
    return rejected


def _parse_row(record: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """One record as a vocabulary row, and every reason it is not a valid one."""
    if "_not_object" in record:
        return {}, [f"not an object with {', '.join(COLUMNS)}"]
    text = {k: _text(record.get(k)) for k in ("code", "name", "category_group", "description")}
    sensitive = _flag(record.get("sensitive"))
    found = [
        *_shape_reasons(record),
        _code_reason("code", text["code"]),
        _name_reason(text["name"]),
        _code_reason("category_group", text["category_group"]),
        _sensitive_reason(record.get("sensitive")) if sensitive is None else None,
        f"description longer than {MAX_DESCRIPTION} characters"
        if len(text["description"]) > MAX_DESCRIPTION
        else None,
    ]
    row = {
        "code": text["code"].lower(),
        "name": text["name"],
        "category_group": text["category_group"].lower(),
        "sensitive": sensitive,
        "description": text["description"],
    }
    return row, [reason for reason in found if reason is not None]


def _shape_reasons(record: Mapping[str, Any]) -> list[str]:
    """Cells beyond the header's columns, and fields that are not columns."""
    reasons = []
    if record.get("_extra"):
        reasons.append("more cells than the header has columns")
    unknown = sorted(str(k) for k in record if k not in COLUMNS and k != "_extra")
    if unknown:
        reasons.append(f"unknown field(s) {', '.join(unknown)}")
    return reasons


def _code_reason(column: str, written: str) -> str | None:
    """Why ``written`` is not a valid code for ``column`` (``code``, ``category_group``)."""
    if not written:
        return f"missing {column}"
    if not CODE.fullmatch(written.lower()):
        return f"{column} {written!r} is not lower-case letters, digits, _ or - (at most 64)"
    return None


def _name_reason(name: str) -> str | None:
    if not name:
        return "missing name"
    if len(name) > MAX_NAME:
        return f"name longer than {MAX_NAME} characters"
    return None


def _sensitive_reason(shown: Any) -> str:
    """Why a ``sensitive`` cell that is neither true nor false was refused."""
    if shown is None or _text(shown) == "":
        return "missing sensitive (true or false)"
    return f"sensitive {shown!r} is not true or false"


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else str(value).strip()


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        return None
    flag = value.strip().lower()
    return True if flag in TRUE else False if flag in FALSE else None


# -- storing -------------------------------------------------------------------------------


async def list_categories(conn: AsyncConnection) -> tuple[int, list[dict[str, Any]]]:
    """The vocabulary's version and its categories (by group, then code)."""
    version = (await conn.execute(sql.select_vocabulary_version())).scalar_one()
    rows = (await conn.execute(sql.select_categories())).mappings().all()
    return version, [dict(r) for r in rows]


async def save_categories(
    engine: AsyncEngine,
    rows: list[dict[str, Any]],
    *,
    actor: str,
    replace: bool = False,
    source: str = "",
    expected_version: int | None = None,
) -> CategoryReport:
    """Save checked rows (:func:`parse_categories`) in one transaction: upsert by code,
    and with ``replace`` delete the stored codes the rows lack (409, nothing written, if
    an incident uses one). A save that changes something is a new version, audited with
    the whole vocabulary before and after. ``expected_version`` (the version the caller
    read and edited) makes the save a 409 if another one came in between."""
    async with engine.begin() as conn:
        await conn.execute(sql.lock_categories())
        version, stored = await list_categories(conn)
        if expected_version is not None and expected_version != version:
            raise Conflict(
                f"the vocabulary is at version {version}, not {expected_version}: another "
                "save came in between; read it again (GET /categories) and redo the change",
                version=version,
            )
        current = {r["code"]: r for r in stored}
        new = {r["code"]: r for r in rows}
        inserted = sorted(c for c in new if c not in current)
        updated = sorted(c for c in new if c in current and new[c] != current[c])
        unchanged = sorted(c for c in new if c in current and new[c] == current[c])
        missing = sorted(set(current) - set(new))
        deleted = missing if replace else []
        if deleted:
            await _refuse_used(conn, deleted)
        report = CategoryReport(
            version=version,
            received=len(rows),
            inserted=inserted,
            updated=updated,
            unchanged=unchanged,
            deleted=deleted,
            kept=[] if replace else missing,
        )
        if not (inserted or updated or deleted):
            return report
        changed = [new[c] for c in (*inserted, *updated)]
        if changed:
            await conn.execute(sql.upsert_categories(changed))
        if deleted:
            try:
                async with conn.begin_nested():
                    await conn.execute(sql.delete_categories(deleted))
            except IntegrityError as exc:  # an incident written since the check
                await _refuse_used(conn, deleted)
                raise Conflict(_used_reason(deleted)) from exc
        after = [r for c, r in sorted({**current, **new}.items()) if c not in deleted]
        report = dataclasses.replace(report, version=version + 1)
        await conn.execute(
            audit_sql.insert_audit(
                actor,
                "import",
                sql.VOCABULARY_ENTITY,
                version + 1,
                before={"version": version, "categories": sorted(stored, key=_by_code)},
                after={
                    "version": version + 1,
                    "source": source,
                    "replace": replace,
                    "categories": after,
                    "inserted": inserted,
                    "updated": updated,
                    "deleted": deleted,
                },
            )
        )
    return report


def _by_code(row: Mapping[str, Any]) -> str:
    return row["code"]


async def _refuse_used(conn: AsyncConnection, codes: list[str]) -> None:
    used = (await conn.execute(sql.count_incidents_by_category(codes))).all()
    if used:
        raise Conflict(
            _used_reason([c for c, _ in used], {c: n for c, n in used}),
            in_use=[{"code": c, "incidents": n} for c, n in used],
        )


def _used_reason(codes: list[str], counts: Mapping[str, int] | None = None) -> str:
    listed = ", ".join(f"{c} ({counts[c]:,} incidents)" if counts else c for c in codes)
    return (
        f"cannot delete categories that incidents use (deleted incidents included): {listed}; "
        "nothing was saved. Keep them in the file, or re-categorise their incidents first"
    )
