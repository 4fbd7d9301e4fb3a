"""segdl's command line: a thin typer layer over :mod:`segdl.engine`."""
