"""The category vocabulary: read by anyone, saved by admins (CSV or JSON), versioned.

Public callers see every category with its sensitive flag, as ``/stats`` already tells
them (``parameters.sensitive_categories``); what stays withheld is the incidents of
sensitive categories, never that such categories exist. No count is given here.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile

from app.core.errors import InvalidFile, ProblemError
from app.deps import Admin, ConnDep, EngineDep
from app.schemas.categories import CategoryList, CategoryPublic, CategoryReportPublic
from app.services.categories import (
    COLUMNS,
    list_categories,
    parse_categories,
    read_categories_csv,
    read_categories_json,
    save_categories,
)

router = APIRouter(prefix="/categories", tags=["categories"])

CSV_TYPES = ("text/csv", "application/csv", "text/plain")
JSON_TYPES = ("application/json",)
EXAMPLE_CSV = (
    "code,name,category_group,sensitive,description\n"
    "shooting,Shooting,firearm,false,Discharge of a firearm at a person\n"
    "sexual_violence,Sexual violence,violence_against_women,true,\n"
)


class UnsupportedMediaType(ProblemError):
    """A body in a format the route does not read."""

    status, title = 415, "Unsupported media type"


def _links(request: Request) -> list[dict[str, str]]:
    return [
        {"rel": "self", "type": "application/json", "href": str(request.url_for("get_categories"))}
    ]


@router.get("", response_model=CategoryList, summary="The category vocabulary (public)")
async def get_categories(request: Request, conn: ConnDep) -> CategoryList:
    """Every category with its group and sensitive flag, and the vocabulary's version."""
    version, rows = await list_categories(conn)
    return CategoryList(
        version=version, categories=[CategoryPublic(**r) for r in rows], links=_links(request)
    )


@router.post(
    "",
    response_model=CategoryReportPublic,
    summary="Save the category vocabulary (admin): upsert by code, or replace",
    description=(
        "The body is CSV (`text/csv`, header "
        f"`{','.join(COLUMNS)}`, description optional), JSON (`application/json`: a list "
        'of category objects, or `{"categories": [...], "version": n}` as GET answers; '
        "with `version`, the save is refused (409) if the vocabulary changed since), or a "
        "form upload with a `file` field (.csv or .json). Every row is checked first: any "
        "invalid row is a 422 listing every rejected row with its reasons, and nothing is "
        "saved. Codes in the body are inserted or updated; with `replace=true` the stored "
        "codes the body lacks are deleted, unless an incident (deleted ones included) "
        "uses one: then a 409 names them and nothing is saved. A save that changes "
        "something is a new version, audited with the whole vocabulary before and after "
        "(`GET /audit?entity=category_vocabulary`)."
    ),
    responses={
        401: {"description": "No API key."},
        403: {"description": "The key is not an admin key."},
        409: {"description": "A code to delete is in use, or the version moved on."},
        415: {"description": "The body is neither CSV, JSON nor a form upload."},
        422: {"description": "Invalid rows (every one listed in `rows`), or no rows."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}, "example": EXAMPLE_CSV},
                "application/json": {
                    "schema": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/CategoryPublic"},
                    }
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
        }
    },
)
async def post_categories(
    request: Request,
    engine: EngineDep,
    who: Admin,
    replace: Annotated[
        bool, Query(description="delete the stored categories the body lacks (if unused)")
    ] = False,
) -> CategoryReportPublic:
    """Check every row of the body, then save the vocabulary in one transaction."""
    records, version, name = await _records(request)
    rows = parse_categories(records, name)
    report = await save_categories(
        engine, rows, actor=who.actor, replace=replace, source=name, expected_version=version
    )
    return CategoryReportPublic(**report.__dict__, links=_links(request))


async def _records(request: Request) -> tuple[list[dict[str, Any]], int | None, str]:
    """The body's records, the version it names (JSON only) and a name for messages."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidFile("the form needs a file field with the vocabulary (.csv, .json)")
            name = upload.filename or "upload"
            data = await upload.read()
        if name.lower().endswith(".json"):
            return (*read_categories_json(_json(data, name), name), name)
        return read_categories_csv(data, name), None, name
    data = await request.body()
    if media in CSV_TYPES:
        return read_categories_csv(data, "request body"), None, "request body"
    if media in JSON_TYPES or media.endswith("+json"):
        return (*read_categories_json(_json(data, "request body")), "request body")
    raise UnsupportedMediaType(
        f"send the vocabulary as text/csv, application/json or multipart/form-data "
        f"(got {media or 'no Content-Type'})"
    )


def _json(data: bytes, name: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidFile(f"{name}: not valid JSON ({exc})") from exc
