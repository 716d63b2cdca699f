"""statsmodels GLM fits that follow R's ``glm.fit`` step by step.

Both fit by IRLS (Fisher scoring); to land on the same iterate as R, and so agree with R
to far better than 1e-6 rather than to R's convergence tolerance, the fits here start
where R starts (``mustart``: ``y + 0.1`` for the Poisson families, ``y + (y == 0) / 6``
for MASS's negative binomial) and stop where R stops
(``|dev - dev_old| / (|dev| + 0.1) < 1e-8``, at most 25 iterations). The regression
itself is statsmodels'.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import digamma, gammaln, polygamma

if TYPE_CHECKING:
    import statsmodels.api as sm

EPSILON = 1e-8  # R glm.control(epsilon)
MAXIT = 25  # R glm.control(maxit)


def poisson_family() -> sm.families.Family:
    """Poisson with log link, started as R's ``poisson()$initialize``."""
    # statsmodels (~30 MiB) is imported where a fit needs it: the report and the API read
    # alerts through app.services.monitors, which imports the detectors, without fitting.
    import statsmodels.api as sm

    family = sm.families.Poisson()
    family.starting_mu = lambda y: y + 0.1
    return family


def negbin_family(theta: float) -> sm.families.Family:
    """Negative binomial with fixed theta (alpha = 1/theta), started as MASS's."""
    import statsmodels.api as sm

    family = sm.families.NegativeBinomial(alpha=1.0 / theta)
    family.starting_mu = lambda y: y + (y == 0) / 6.0
    return family


def fit(y, x, family, *, var_weights=None, offset=None, start_params=None, scale=None):
    """Fit a GLM by statsmodels' IRLS with R's start and stopping rule.

    Poisson fits keep scale 1 during IRLS (statsmodels divides its deviance criterion by
    the scale); take the quasi-Poisson dispersion from :func:`r_dispersion`. Returns the
    statsmodels results; ``.converged`` as R's ``converged``.
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationWarning

    model = sm.GLM(y, x, family=family, var_weights=var_weights, offset=offset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", PerfectSeparationWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return model.fit(
            start_params=start_params,
            maxiter=MAXIT,
            tol=EPSILON,
            atol=EPSILON * 0.1,
            rtol=EPSILON,
            scale=scale,
        )


def r_dispersion(res) -> float:
    """R's ``summary.glm`` dispersion: sum(W (y - mu)^2 / mu^2) / df, log link.

    R takes the working weights W of its last IRLS step, computed from the means before
    that step, with the final means; statsmodels keeps the same W in ``model.weights``.
    """
    y, mu = res.model.endog, res.mu
    return float(np.sum(res.model.weights * ((y - mu) / mu) ** 2) / res.df_resid)


def r_cov(res, dispersion: float | None = None) -> np.ndarray:
    """R's ``vcov`` of a quasi-family fit: the unscaled covariance times the dispersion.

    The dispersion defaults to R's (:func:`r_dispersion`).
    """
    return res.normalized_cov_params * (r_dispersion(res) if dispersion is None else dispersion)


def r_hatvalues(res) -> np.ndarray:
    """R's ``hatvalues`` of a glm: from the working weights of the last IRLS step."""
    wx = np.sqrt(res.model.weights)[:, None] * res.model.exog
    return np.sum(wx * (wx @ res.normalized_cov_params), axis=1)


def _theta_ml(y: np.ndarray, mu: np.ndarray, limit: int = MAXIT) -> float:
    """MASS::theta.ml: Newton steps for the NB shape theta given the means."""
    n = len(y)
    t0 = n / np.sum((y / mu - 1) ** 2)
    eps = np.finfo(float).eps ** 0.25
    it, delta = 0, 1.0
    while (it := it + 1) < limit and abs(delta) > eps:
        t0 = abs(t0)
        score = np.sum(
            digamma(t0 + y) - digamma(t0) + np.log(t0) + 1 - np.log(t0 + mu) - (y + t0) / (mu + t0)
        )
        info = np.sum(
            -polygamma(1, t0 + y)
            + polygamma(1, t0)
            - 1 / t0
            + 2 / (mu + t0)
            - (y + t0) / (mu + t0) ** 2
        )
        delta = score / info
        t0 = t0 + delta
    return max(t0, 0.0)


def _nb_loglik(theta: float, mu: np.ndarray, y: np.ndarray) -> float:
    """MASS::glm.nb's log likelihood (for its alternation stopping rule)."""
    return float(
        np.sum(
            gammaln(theta + y)
            - gammaln(theta)
            - gammaln(y + 1)
            + theta * np.log(theta)
            + y * np.log(mu + (y == 0))
            - (theta + y) * np.log(theta + mu)
        )
    )


def fit_glm_nb(y, x):
    """MASS::glm.nb: alternate GLM fits (fixed theta) and theta.ml as MASS does.

    Returns (statsmodels results of the last fit, theta).
    """
    res = fit(y, x, poisson_family())
    mu = res.mu
    theta = _theta_ml(y, mu)
    d1 = np.sqrt(2 * max(1, res.df_resid))
    delta, d2 = 1.0, 1.0
    lm = _nb_loglik(theta, mu, y)
    lm0 = lm + 2 * d1
    it = 0
    while (it := it + 1) <= MAXIT and abs(lm0 - lm) / d1 + abs(delta) / d2 > EPSILON:
        res = fit(y, x, negbin_family(theta), start_params=res.params)
        t0 = theta
        theta = _theta_ml(y, mu)  # MASS uses the previous fit's means here
        mu = res.mu
        delta = t0 - theta
        lm0, lm = lm, _nb_loglik(theta, mu, y)
    return res, theta
