"""crossprofile: real-time cross-platform user profiles and recommendations."""

__version__ = "0.1.0"
