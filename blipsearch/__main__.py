from blipsearch.cli import app

app()
