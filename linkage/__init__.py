"""Record linkage of deaths across agencies (police, forensic service, health registry):
splink's Fellegi-Sunter model on DuckDB, clusters of records that describe one death,
analysts' decisions respected, multiple-systems estimates. Pure: never imports ``app``."""
