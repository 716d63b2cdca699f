"""Placeholder; being written."""

from fastapi import APIRouter

router = APIRouter(prefix="/analyses", tags=["analyses"])
