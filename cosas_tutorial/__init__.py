"""cosas_tutorial: the helper package of the COSAS domain-generalisation tutorial."""

__version__ = "0.2.0"
