"""SFRS Studio: self-supervised fine-grained region similarities for image localization."""

__version__ = "0.1.0"
