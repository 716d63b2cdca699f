# Reference values for the detectors in surveillance/ (issue 19).
#
# Generates three count series with a fixed seed, runs R surveillance's earsC,
# farringtonFlexible and glrnb on each, and writes the series and every detector's
# output as CSV next to this script. The Python tests compare against these files, so
# CI needs no R. Re-run (Debian bookworm: r-base-core 4.2.2, r-cran-surveillance 1.20.3):
#
#   Rscript tests/data/surveillance/make_reference.R
#
# Series are sts objects without dates (epochAsDate = FALSE): week t of a weekly series
# is 52 periods after week t - 52, exactly as surveillance/farrington.py indexes them.

suppressPackageStartupMessages(library(surveillance))
args <- commandArgs(trailingOnly = FALSE)
here <- dirname(normalizePath(sub("^--file=", "", args[grep("^--file=", args)])))

set.seed(20261206)

# 1. weekly, seasonal, negative binomial (size 10), with four planted outbreaks
n_w <- 312
t_w <- seq_len(n_w)
mu_w <- exp(1.6 + 0.5 * sin(2 * pi * t_w / 52) + 0.3 * cos(2 * pi * t_w / 52))
weekly <- rnbinom(n_w, mu = mu_w, size = 10)
for (s in c(140, 215, 280, 300)) {
  weekly[s:(s + 2)] <- weekly[s:(s + 2)] + rpois(3, c(6, 9, 6))
}

# 2. monthly, sparse small counts (Poisson, mean under 1 most months)
n_m <- 96
t_m <- seq_len(n_m)
monthly <- rpois(n_m, exp(-0.4 + 0.6 * sin(2 * pi * t_m / 12)))
monthly[c(70, 71, 88)] <- monthly[c(70, 71, 88)] + c(3, 4, 3)

# 3. weekly with an upward trend (Poisson), two late outbreaks
trend <- rpois(n_w, exp(1.0 + 0.004 * t_w + 0.3 * sin(2 * pi * t_w / 52)))
trend[c(290, 291, 305)] <- trend[c(290, 291, 305)] + c(8, 10, 9)

series <- list(
  weekly_seasonal = list(y = weekly, freq = 52),
  monthly_sparse = list(y = monthly, freq = 12),
  weekly_trend = list(y = trend, freq = 52)
)

write.csv(
  do.call(rbind, lapply(names(series), function(nm) {
    data.frame(series = nm, freq = series[[nm]]$freq, t = seq_along(series[[nm]]$y),
               observed = series[[nm]]$y)
  })),
  file.path(here, "series.csv"), row.names = FALSE
)

as_sts <- function(s) sts(observed = s$y, frequency = s$freq, start = c(2015, 1))

num <- function(x) ifelse(is.na(x), NA, sprintf("%.15g", x))

rows <- function(series_name, detector, res, extra = list()) {
  # every range here is contiguous and ends with the series (sts[range, ] renumbers epochs)
  n <- length(series[[series_name]]$y)
  t <- n - nrow(res) + seq_len(nrow(res))
  out <- data.frame(
    series = series_name, detector = detector, t = t,
    observed = as.vector(observed(res)),
    upperbound = num(as.vector(upperbound(res))),
    alarm = as.vector(res@alarm), stringsAsFactors = FALSE
  )
  if (length(extra)) out <- cbind(out, as.data.frame(extra, stringsAsFactors = FALSE))
  out
}

# ---- EARS C1, C2, C3 with the package defaults (alpha 0.001 for C1/C2, 0.025 for C3)
ears <- list()
for (nm in names(series)) {
  for (m in c("C1", "C2", "C3")) {
    res <- earsC(as_sts(series[[nm]]), control = list(method = m))
    ears[[length(ears) + 1]] <- rows(nm, m, res)
  }
  # a longer baseline, a minimum sigma and another alpha
  res <- earsC(as_sts(series[[nm]]), control = list(method = "C2", baseline = 10,
                                                     minSigma = 0.5, alpha = 0.01))
  ears[[length(ears) + 1]] <- rows(nm, "C2_b10_ms0.5_a0.01", res)
  res <- earsC(as_sts(series[[nm]]), control = list(method = "C3", minSigma = 1))
  ears[[length(ears) + 1]] <- rows(nm, "C3_ms1", res)
}
write.csv(do.call(rbind, ears), file.path(here, "ears.csv"), row.names = FALSE)

# ---- farringtonFlexible
ff_configs <- list(
  # the original Farrington et al. (1996) algorithm as the package documents it
  farrington = list(noPeriods = 1, b = 4, w = 3, weightsThreshold = 1,
                    pastWeeksNotIncluded = 3, pThresholdTrend = 0.05,
                    thresholdMethod = "delta", powertrans = "2/3", alpha = 0.05),
  # Noufaily et al. (2013) improvements, the package's documented example settings
  noufaily = list(noPeriods = 10, b = 4, w = 3, weightsThreshold = 2.58,
                  pastWeeksNotIncluded = 26, pThresholdTrend = 1,
                  thresholdMethod = "nbPlugin", alpha = 0.05),
  noufaily_muan = list(noPeriods = 10, b = 4, w = 3, weightsThreshold = 2.58,
                       pastWeeksNotIncluded = 26, pThresholdTrend = 1,
                       thresholdMethod = "muan", alpha = 0.05),
  # package defaults (b = 5, w = 3, noPeriods = 1, delta, 2/3 power, trend if p < 0.05)
  defaults = list(),
  # Noufaily with a population offset (population growing 0.2 % a period)
  population_offset = list(noPeriods = 10, b = 4, w = 3, weightsThreshold = 2.58,
                           pastWeeksNotIncluded = 26, pThresholdTrend = 0.05,
                           thresholdMethod = "muan", populationOffset = TRUE)
)
ff <- list()
for (nm in names(series)) {
  for (cn in names(ff_configs)) {
    ctrl <- ff_configs[[cn]]
    ctrl$glmWarnings <- FALSE
    x <- as_sts(series[[nm]])
    if (isTRUE(ctrl$populationOffset)) population(x) <- matrix(1000 * (1 + 0.002 * seq_len(nrow(x))))
    res <- farringtonFlexible(x, control = ctrl)
    ctl <- res@control
    ff[[length(ff) + 1]] <- rows(nm, cn, res, list(
      expected = num(as.vector(ctl$expected)), score = num(as.vector(ctl$score)),
      pvalue = num(as.vector(ctl$pvalue)), phi = num(as.vector(ctl$phiVector)),
      trend = as.vector(ctl$trend)
    ))
  }
}
write.csv(do.call(rbind, ff), file.path(here, "farrington.csv"), row.names = FALSE)

# ---- glrnb: mu0 from a GLM on the first two years (one harmonic), c.ARL = 5
glr_configs <- list(
  nb_value = list(alpha = 0.2, ret = "value"),
  nb_window = list(alpha = 0.2, ret = "value", M = 26, c.ARL = 4),
  pois_value = list(alpha = 0, ret = "value"),
  pois_cases = list(alpha = 0, ret = "cases"),
  pois_window_cases = list(alpha = 0, ret = "cases", M = 10),
  nb_estimated = list(ret = "value"),  # alpha = 1 / theta of MASS::glm.nb
  nb_cases = list(alpha = 0.2, ret = "cases"),  # R's brute-force search
  nb_window_cases = list(alpha = 0.2, ret = "cases", M = 26),
  pois_dec = list(alpha = 0, ret = "value", dir = "dec"),
  nb_dec = list(alpha = 0.2, ret = "value", dir = "dec")
)
glr <- list()
for (nm in names(series)) {
  s <- series[[nm]]
  rng <- (2 * s$freq + 1):length(s$y)
  for (cn in names(glr_configs)) {
    ctrl <- c(list(range = rng, c.ARL = 5, mu0 = list(S = 1, trend = FALSE)),
              glr_configs[[cn]])
    ctrl <- modifyList(ctrl, glr_configs[[cn]])
    res <- suppressMessages(glrnb(as_sts(s), control = ctrl))
    mu0 <- res@control$mu0
    glr[[length(glr) + 1]] <- rows(nm, cn, res, list(
      mu0 = num(mu0), alpha = num(rep(res@control$alpha, length(mu0)))
    ))
  }
}
write.csv(do.call(rbind, glr), file.path(here, "glrnb.csv"), row.names = FALSE)

cat("R", as.character(getRversion()), "surveillance",
    as.character(packageVersion("surveillance")), "\n")

# ---- surveillance's own test vector for algo.glrnb (tests/testthat/test-algo.glrnb.R of
# surveillance 1.20, GPL-2): the series is regenerated with its seed; `pinned` is the
# upperbound the package pins there (7 significant digits), `upperbound` this run's.
t <- 1:120
base <- 1.5 + 0.6 * cos(2 * pi / 52 * t) + 0.6 * sin(2 * pi / 52 * t)
mu0 <- exp(base)
set.seed(42)
x <- rnbinom(length(t), mu = mu0 * (exp(0.4)^(t >= 100)), size = 1 / 0.2)
s.ts <- suppressWarnings(create.disProg(week = t, observed = x, state = (t >= 100)))
glr.ts1 <- algo.glrnb(s.ts, control = list(range = t, c.ARL = 5, mu0 = mu0, alpha = 0.2,
                                           change = "intercept", ret = "value", dir = "inc"))
pinned <- c(
    0.0933664, 0, 0.001387989, 0.4392282, 1.239898, 2.983766, 1.954988,
    1.722341, 1.586777, 0.7331938, 0.9337575, 0.7903225, 1.104522,
    1.425098, 1.24129, 1.633672, 2.033343, 1.788079, 1.397671, 0.9081794,
    0.797097, 0.7270934, 0.5248943, 0.3093548, 0.2622768, 0.2301054,
    0.1595651, 0.1484989, 0.06889605, 0.1504776, 0.04138495, 0.02219845,
    0.0231524, 0.009575689, 0.1504776, 0.5827537, 0.0357062, 0.005011513,
    0, 1.390972, 0.3167743, 0.5717088, 0.1053871, 0.003442552, 0.0005934715,
    0, 0, 0.05509335, 0.1375619, 0.2449853, 0.6840703, 0.5427538,
    0.05675776, 0.06656547, 0.09036596, 0.209314, 0.1392091, 0.03494786,
    0.026216, 0.277202, 0.01762547, 0, 0, 0, 3.564077, 1.41019, 0.290548,
    0.3740241, 0.4269062, 0.1296794, 0.1298662, 0.6322042, 0.2115204,
    0.107457, 0.9366399, 0.1379007, 0.1509654, 0.03392803, 0.005775552,
    0, 0, 0, 0, 0, 0.001143512, 0.001637927, 1.021689, 1.965804,
    1.83044, 1.017412, 0.3033473, 0.1689957, 0.4051742, 0.1247774,
    0.1460143, 0.03590031, 0.9459381, 0.4189531, 0.2637725, 0.03925406,
    0.01374443, 0.2283519, 2.535301, 1.406133, 1.692899, 2.021258,
    2.951635, 4.25683, 4.77543, 3.90064, 3.646361, 3.680106, 4.236502,
    5.522696, 0.1221651, 0.4054735, 0.6761779, 0.8039129, 0.3913383,
    0.1261521)
write.csv(data.frame(t = t, observed = x, mu0 = num(mu0), pinned = pinned,
                     upperbound = num(c(glr.ts1$upperbound)), alarm = c(glr.ts1$alarm)),
          file.path(here, "testthat_glrnb.csv"), row.names = FALSE)
