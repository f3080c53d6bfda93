from sdporec.cli import entry

entry()
