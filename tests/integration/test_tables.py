"""Population and indicator imports on the real PostGIS: all or nothing, idempotent."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from app.core.errors import InvalidFile
from app.core.settings import Settings
from app.services.tables import (
    TableReport,
    import_indicators,
    import_population,
    load_demo_population,
)
from tests.conftest import call_service

# Years no other test or demo loader uses, so counts here are ours alone.
YEAR = 1991

POPULATION_CSV = f"""unit_code,year,sex,age_group,value,source
BZ-BZ,{YEAR},total,total,100000,test census
BZ-BZ,{YEAR},female,total,51000,test census
BZ-BZ,{YEAR},male,,49000,test census
BZ-CY,{YEAR},,,80000.5,test census
bz-tol,{YEAR},Total,15-29,"12,345",test census
BZ,{YEAR},total,65+,20000,test census
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _count(db: psycopg.Connection, sql: str, *params: object) -> int:
    return db.execute(sql, params).fetchone()[0]


def _population_rows(db: psycopg.Connection, year: int) -> int:
    return _count(db, "SELECT count(*) FROM population WHERE year = %s", year)


def _audits(db: psycopg.Connection, entity: str) -> int:
    return _count(db, "SELECT count(*) FROM audit_log WHERE entity = %s", entity)


def test_population_import_then_idempotent_reimport(
    base_data: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    path = _write(tmp_path, "population.csv", POPULATION_CSV)
    audits = _audits(db, "population")

    first = call_service(base_data, lambda e: import_population(e, path, actor="tests"))
    assert first == TableReport(
        table="population", filename="population.csv",
        received=6, inserted=6, updated=0, unchanged=0,
    )  # fmt: skip
    assert _population_rows(db, YEAR) == 6
    row = db.execute(
        """SELECT p.value, p.sex, p.age_group, p.source FROM population p
           JOIN admin_unit u ON u.id = p.unit_id
           WHERE u.code = 'BZ-TOL' AND p.year = %s""",
        [YEAR],
    ).fetchone()
    assert row == (12345.0, "total", "15-29", "test census")
    assert _audits(db, "population") == audits + 1
    actor, action = db.execute(
        "SELECT actor, action FROM audit_log WHERE entity = 'population' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert (actor, action) == ("tests", "import")

    again = call_service(base_data, lambda e: import_population(e, path, actor="tests"))
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 6)
    assert _population_rows(db, YEAR) == 6

    changed = _write(tmp_path, "changed.csv", POPULATION_CSV.replace("80000.5", "80001"))
    report = call_service(base_data, lambda e: import_population(e, changed, actor="tests"))
    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 5)
    value = db.execute(
        """SELECT p.value FROM population p JOIN admin_unit u ON u.id = p.unit_id
           WHERE u.code = 'BZ-CY' AND p.year = %s""",
        [YEAR],
    ).fetchone()[0]
    assert value == 80001.0


def test_population_file_with_bad_rows_writes_nothing(
    base_data: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    year = YEAR + 1
    path = _write(
        tmp_path,
        "bad.csv",
        f"""unit_code,year,sex,value,source
BZ-BZ,{year},total,100,ok
BZ-XX,{year},total,100,unknown unit
BZ-CY,19x1,total,100,bad year
BZ-CY,{year},other,100,bad sex
BZ-CZL,{year},total,lots,not a number
BZ-OW,{year},total,-5,negative
BZ-SC,{year},total,,empty
BZ-BZ,{year},total,200,duplicate of row 1
""",
    )
    audits = _audits(db, "population")
    with pytest.raises(InvalidFile) as caught:
        call_service(base_data, lambda e: import_population(e, path, actor="tests"))
    error = caught.value
    assert error.status == 422
    assert error.extra["invalid"] == 7
    rows = {r["row"]: r["reason"] for r in error.extra["rows"]}
    assert sorted(rows) == [2, 3, 4, 5, 6, 7, 8]
    assert "BZ-XX" in rows[2]
    assert "year" in rows[3]
    assert "sex" in rows[4]
    assert "not a number" in rows[5]
    assert "negative" in rows[6]
    assert "empty" in rows[7]
    assert "row 1" in rows[8]
    assert _population_rows(db, year) == 0
    assert _audits(db, "population") == audits


def test_population_file_without_required_column(base_data: Settings, tmp_path: Path) -> None:
    path = _write(tmp_path, "nocol.csv", "unit_code,value\nBZ-BZ,1\n")
    with pytest.raises(InvalidFile, match="year"):
        call_service(base_data, lambda e: import_population(e, path, actor="tests"))
    empty = _write(tmp_path, "empty.csv", "unit_code,year,value\n")
    with pytest.raises(InvalidFile, match="no data rows"):
        call_service(base_data, lambda e: import_population(e, empty, actor="tests"))


def test_indicator_import(base_data: Settings, db: psycopg.Connection, tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "indicators.csv",
        """unit_code,period,indicator,sex,age_group,value,source
BZ-BZ,1991,test_poverty_rate,,,41.3,test survey
BZ-CY,1991-Q2,test_poverty_rate,total,total,35.0,test survey
BZ-TOL,1991-03,test_dropout,female,15-29,-2.5,test survey
""",
    )
    first = call_service(base_data, lambda e: import_indicators(e, path, actor="tests"))
    assert (first.table, first.received, first.inserted, first.updated) == (
        "indicator_value", 3, 3, 0,
    )  # fmt: skip
    again = call_service(base_data, lambda e: import_indicators(e, path, actor="tests"))
    assert (again.inserted, again.unchanged) == (0, 3)
    stored = db.execute(
        """SELECT period, indicator, sex, age_group, value FROM indicator_value
           WHERE indicator LIKE 'test_%%' ORDER BY period"""
    ).fetchall()
    assert stored == [
        ("1991", "test_poverty_rate", "total", "total", 41.3),
        ("1991-03", "test_dropout", "female", "15-29", -2.5),
        ("1991-Q2", "test_poverty_rate", "total", "total", 35.0),
    ]

    bad = _write(
        tmp_path,
        "bad_indicators.csv",
        """unit_code,period,indicator,value
BZ-BZ,1991-Q5,test_poverty_rate,1
BZ-BZ,1991,test poverty,1
BZ-BZ,1992,test_new,inf
""",
    )
    with pytest.raises(InvalidFile) as caught:
        call_service(base_data, lambda e: import_indicators(e, bad, actor="tests"))
    reasons = [r["reason"] for r in caught.value.extra["rows"]]
    assert "period" in reasons[0]
    assert "indicator" in reasons[1]
    assert "finite" in reasons[2]
    assert _count(db, "SELECT count(*) FROM indicator_value WHERE indicator = 'test_new'") == 0


def test_demo_population(base_data: Settings, db: psycopg.Connection) -> None:
    report = call_service(base_data, lambda e: load_demo_population(e, actor="tests"))
    assert report.skipped == 0
    assert report.received == report.inserted + report.updated + report.unchanged
    districts = db.execute(
        """SELECT u.code, p.value, p.source FROM population p
           JOIN admin_unit u ON u.id = p.unit_id
           WHERE p.year = 2022 AND p.sex = 'total' AND p.age_group = 'total' AND u.level = 1
           ORDER BY u.code"""
    ).fetchall()
    assert [code for code, _, _ in districts] == [
        "BZ-BZ", "BZ-CY", "BZ-CZL", "BZ-OW", "BZ-SC", "BZ-TOL",
    ]  # fmt: skip
    values = {code: value for code, value, _ in districts}
    # SIB census 2022 weighted district totals (shared/data/README.md, section 2).
    assert values["BZ-BZ"] == pytest.approx(113_630.2, abs=0.1)
    assert values["BZ-TOL"] == pytest.approx(37_123.9, abs=0.1)
    assert all("Statistical Institute of Belize" in source for _, _, source in districts)
    national = _count(
        db,
        """SELECT p.value FROM population p JOIN admin_unit u ON u.id = p.unit_id
           WHERE u.code = 'BZ' AND p.year = 2022 AND p.sex = 'total'""",
    )
    assert national == pytest.approx(397_483.46, abs=0.01)
    # Derived female + male add up to the district total; Belize District: 947 m per 1000 f.
    female, male, source = db.execute(
        """SELECT sum(p.value) FILTER (WHERE sex = 'female'), sum(p.value) FILTER (WHERE
           sex = 'male'), min(p.source) FROM population p JOIN admin_unit u ON u.id = p.unit_id
           WHERE u.code = 'BZ-BZ' AND p.year = 2022 AND p.sex <> 'total'"""
    ).fetchone()
    assert female + male == pytest.approx(values["BZ-BZ"])
    assert male / female * 1000 == pytest.approx(947)
    assert source.startswith("Derived from SIB sex ratio")
    districts_2010 = _count(
        db,
        """SELECT count(*) FROM population p JOIN admin_unit u ON u.id = p.unit_id
           WHERE p.year = 2010 AND p.sex = 'total' AND u.level = 1""",
    )
    assert districts_2010 == 6

    again = call_service(base_data, lambda e: load_demo_population(e, actor="tests"))
    assert (again.inserted, again.updated) == (0, 0)
