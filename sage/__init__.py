"""sage: turn a backlog of dependent tickets into landed commits."""

__version__ = "0.1.0"
