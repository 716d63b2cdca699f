"""Files in and out: the one CSV/XLSX writer of every export (formula-leading text
neutralised) and the uploaded files, saved within the size limit before they are read."""
