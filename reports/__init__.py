"""The periodic situational report, rendered: a ReportDocument (numbers already computed)
in, HTML, PDF and a CSV/XLSX bundle out. Pure: never imports ``app`` and reads no
database, so it runs the same in a worker, the CLI and the tests."""
