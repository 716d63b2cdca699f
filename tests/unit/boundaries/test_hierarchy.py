"""assign_parents: representative point first, largest overlap next, explicit codes win."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.affinity import translate
from shapely.geometry import Polygon, box

from boundaries import BoundaryError
from boundaries.hierarchy import assign_parents

# Two parents side by side: A = [0, 10] x [0, 10], B = [10, 20] x [0, 10].
PARENTS = gpd.GeoDataFrame(
    {"code": ["A", "B"], "name": ["a", "b"]},
    geometry=[box(0, 0, 10, 10), box(10, 0, 20, 10)],
    crs=4326,
)


def _children(geometries, parent_codes=None) -> gpd.GeoDataFrame:
    codes = [f"C{i}" for i in range(len(geometries))]
    return gpd.GeoDataFrame(
        {"code": codes, "name": codes, "parent_code": parent_codes or [None] * len(codes)},
        geometry=geometries,
        crs=4326,
    )


def test_containment_and_overlap_fallback():
    children = _children(
        [
            box(1, 1, 3, 3),  # inside A
            box(12, 1, 19, 9),  # inside B
            # A different generalisation: mostly in B, spilling into A and past B's edge.
            box(9, 0, 21, 10),
            # A C-shape whose centroid would fall outside it; point_on_surface stays in A.
            Polygon([(1, 1), (9, 1), (9, 2), (2, 2), (2, 8), (9, 8), (9, 9), (1, 9)]),
            box(30, 30, 31, 31),  # touches no parent
        ]
    )
    before = children.copy()
    result = assign_parents(children, PARENTS)
    assert result["parent_code"].tolist() == ["A", "B", "B", "A", None]
    assert children.equals(before)  # input untouched
    assert result["code"].tolist() == children["code"].tolist()


def test_point_on_a_shared_edge_uses_overlap_area():
    # Representative point lands on x = 10 (the A/B edge); B holds 3/4 of the area.
    child = box(9, 4, 13, 6)
    result = assign_parents(_children([child]), PARENTS)
    assert result["parent_code"].tolist() == ["B"]


def test_generalised_child_slightly_outside_parent():
    # A coastal unit whose coarse outline pokes out of the parent's outline.
    child = translate(box(17, 2, 21, 4), xoff=0.5)
    result = assign_parents(_children([child]), PARENTS)
    assert result["parent_code"].tolist() == ["B"]


def test_explicit_parent_wins_and_must_exist():
    result = assign_parents(_children([box(1, 1, 2, 2), box(1, 1, 2, 2)], ["B", None]), PARENTS)
    assert result["parent_code"].tolist() == ["B", "A"]
    with pytest.raises(BoundaryError, match="not among the loaded parent units: Z"):
        assign_parents(_children([box(1, 1, 2, 2)], ["Z"]), PARENTS)


def test_no_parents():
    result = assign_parents(_children([box(1, 1, 2, 2)]), PARENTS.iloc[0:0])
    assert result["parent_code"].tolist() == [None]
    with pytest.raises(BoundaryError, match=r"\(no parent units are loaded\)"):
        assign_parents(_children([box(1, 1, 2, 2)], ["A"]), PARENTS.iloc[0:0])


def test_children_without_parent_column():
    children = gpd.GeoDataFrame({"code": ["X"]}, geometry=[box(11, 1, 12, 2)], crs=4326)
    result = assign_parents(children, PARENTS)
    assert result["parent_code"].tolist() == ["B"]
    assert "parent_code" not in children.columns


def test_crs_mismatch():
    with pytest.raises(BoundaryError, match="different CRSs"):
        assign_parents(_children([box(1, 1, 2, 2)]), PARENTS.to_crs(3857))
