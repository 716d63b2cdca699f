"""Schemas for the category vocabulary."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CategoryPublic(BaseModel):
    """One category of the vocabulary."""

    code: str = Field(description="what incident files and filters name, e.g. homicide")
    name: str = Field(description="label; incident files may also name the category by it")
    category_group: str = Field(description="group, e.g. violent_death (by=category_group)")
    sensitive: bool = Field(
        description="withheld from every table and layer below the analyst role"
    )
    description: str = ""


class CategoryList(BaseModel):
    """The vocabulary and its version (0 while none was saved through this service)."""

    version: int
    categories: list[CategoryPublic]
    links: list[dict[str, str]] = []


class CategoryReportPublic(BaseModel):
    """What ``POST /categories`` did, by code."""

    version: int = Field(description="the vocabulary's version after the save")
    received: int
    inserted: list[str]
    updated: list[str]
    unchanged: list[str]
    deleted: list[str] = Field(description="only with replace=true")
    kept: list[str] = Field(description="stored codes the body lacked, left as they were")
    links: list[dict[str, str]] = []
