"""Pure composite-index engine after the OECD/JRC Handbook and the JRC's COINr.

No database, no HTTP, no settings: a raw indicator table (rows = units, columns =
indicator codes) and an index definition in; new frames and frozen dataclasses out. Inputs
are never modified, and every parameter of a run is recorded in its result so that the run
can be rebuilt.

The steps follow COINr (Becker et al. 2022) one module each: :mod:`indexes.spec` (the
definition), :mod:`indexes.screen` (checks of the raw table), :mod:`indexes.impute`,
:mod:`indexes.treat` (the JRC outlier rule), :mod:`indexes.normalise`, :mod:`indexes.weights`,
:mod:`indexes.aggregate`, :mod:`indexes.contribution`, :mod:`indexes.rank` and
:mod:`indexes.sensitivity`; :mod:`indexes.pipeline` chains them.

Note that the package attribute ``indexes.sensitivity`` is the *function*
:func:`sensitivity`; import the module's other names with
``from indexes.sensitivity import ...``.

References
----------
OECD/JRC (2008). *Handbook on Constructing Composite Indicators: Methodology and User
Guide*. OECD Publishing, Paris. https://doi.org/10.1787/9789264043466-en

Becker, W., Caperna, G., Del Sorbo, M., Norlén, H., Papadimitriou, E., Saisana, M. (2022).
COINr: An R package for developing composite indicators. *Journal of Open Source
Software* 7(78), 4567. https://doi.org/10.21105/joss.04567
"""

from __future__ import annotations


class IndexDefinitionError(ValueError):
    """An index definition is invalid; the message lists every problem (the app maps it to 422)."""


class IndexDataError(ValueError):
    """The indicator table cannot be used as asked; the message says which cells or columns."""


# The step modules import the two errors above from this package, so they come after them.
from indexes.pipeline import IndexResult, compute_index  # noqa: E402
from indexes.sensitivity import SensitivityResult, sensitivity  # noqa: E402
from indexes.spec import IndexDefinition, load_definition  # noqa: E402

__all__ = [
    "IndexDataError",
    "IndexDefinition",
    "IndexDefinitionError",
    "IndexResult",
    "SensitivityResult",
    "compute_index",
    "load_definition",
    "sensitivity",
]
