"""The version of isthmus-wire (read by the build backend)."""

__version__ = "0.1.0"
