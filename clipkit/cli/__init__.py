"""clipkit's command line: Typer commands that parse options, call one library function and format results."""
