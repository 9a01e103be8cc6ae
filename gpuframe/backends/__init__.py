from .registry import FallbackError, PerformanceWarning, register, resolve

__all__ = ["FallbackError", "PerformanceWarning", "register", "resolve"]
